"""cuSPARSELt host-cost caches (fst.ops.cslt) on CPU: plan keys, the driver's selection and
fallback, and the per-step pack cache of weight operands, with the emulated GEMM and a fake
driver (the CuPy driver itself runs only on a GPU: tests/gpu/test_sparse24_cuda.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fst
from fst.masks import nm_mask
from fst.ops.cslt import CusparseltGemm, EmulatedGemm, PlanDriver, PlanKey

BE = fst.BACKENDS.get("sparse24")


def prefer_gemm(fn, device, label):
    """A fake timer under which the cuSPARSELt kernel ``gemm`` is the fastest."""
    return 0.0 if label.endswith(":gemm") else 1.0


def _sparse(m, k, dtype=torch.float32):
    a = torch.randn(m, k, dtype=dtype)
    return a * nm_mask(a, dim=1)


def test_plans_are_keyed_by_shape_dtype_and_layouts():
    gemm = EmulatedGemm()
    a = gemm.compress(_sparse(32, 16))
    b = torch.randn(16, 24)
    for _ in range(3):
        gemm.mm(a, b)
    assert (gemm.plans.builds, gemm.plans.hits) == (1, 2)
    gemm.mm(a, b, transpose_result=True)  # another result layout
    gemm.mm(a, torch.randn(24, 16).t())  # column-major B
    gemm.mm(a, torch.randn(16, 40))  # another N
    gemm.mm(gemm.compress(_sparse(32, 16, torch.float64)), b.double())  # another dtype
    assert gemm.plans.builds == 5
    keys = set(gemm.plans.plans)
    assert PlanKey(32, 16, 24, torch.float32, True, False, 0, "cpu") in keys
    assert PlanKey(32, 16, 24, torch.float32, False, False, 0, "cpu") in keys
    gemm.mm(a, torch.randn(16, 20))  # N padded to 24: the same plan as the first
    assert gemm.plans.builds == 5


class FakeDriver(PlanDriver):
    """Multiplies like cuSPARSELt would (``data`` here is the dense A); counts builds."""

    name = "fake"

    def __init__(self, a, usable=True, wrong=False, fail=False):
        self.a, self.ok, self.wrong, self.fail = a, usable, wrong, fail
        self.built, self.calls = [], 0

    def usable(self, device):
        return self.ok

    def build(self, key):
        if self.fail:
            raise RuntimeError("binding differs")
        self.built.append(key)
        return key

    def matmul(self, plan, data, b):
        self.calls += 1
        c = self.a @ b + (1.0 if self.wrong else 0.0)
        return c.t().contiguous() if plan.transpose_result else c


@pytest.fixture
def torch_cslt(monkeypatch):
    """torch._cslt_sparse_mm on CPU: A @ B from the test's dense A (``holder[0]``)."""
    holder = []

    def fake(data, b, bias=None, transpose_result=False, alg_id=0):
        c = holder[0] @ b
        if bias is not None:
            c = c + bias[:, None]
        return c.t().contiguous() if transpose_result else c

    monkeypatch.setattr(torch, "_cslt_sparse_mm", fake)
    return holder


def _data(m, k):
    return torch.zeros(m * k * 9 // 16, dtype=torch.bfloat16)  # cuSPARSELt's packed size


@pytest.mark.parametrize("transpose", [False, True])
def test_driver_runs_from_cached_plans_and_adds_the_bias(torch_cslt, transpose):
    a = torch.randn(32, 16)
    torch_cslt.append(a)
    driver = FakeDriver(a)
    gemm = CusparseltGemm(driver=driver)
    b, bias = torch.randn(16, 24), torch.randn(32)
    for _ in range(4):
        c = gemm._mm(_data(32, 16), b, bias, transpose)
    want = a @ b + bias[:, None]
    torch.testing.assert_close(c, want.t() if transpose else want)
    assert len(driver.built) == 1 and driver.calls == 4 and gemm.driver_used == "fake"
    assert driver.built[0] == PlanKey(32, 16, 24, torch.float32, True, transpose, 0, "cpu")


def test_driver_is_skipped_where_unusable_and_dropped_on_a_mismatch(torch_cslt):
    a = torch.randn(32, 16)
    torch_cslt.append(a)
    b = torch.randn(16, 8)
    gemm = CusparseltGemm(driver=FakeDriver(a, usable=False))  # e.g. a side stream
    torch.testing.assert_close(gemm._mm(_data(32, 16), b, None, False), a @ b)
    assert gemm.driver_used == "torch" and gemm.driver is not None and not gemm.plans.builds
    for bad in (FakeDriver(a, wrong=True), FakeDriver(a, fail=True)):
        gemm = CusparseltGemm(driver=bad)
        torch.testing.assert_close(gemm._mm(_data(32, 16), b, None, False), a @ b)
        assert gemm.driver is None and gemm.driver_failure and gemm.driver_used == "torch"
        gemm._mm(_data(32, 16), b, None, False)
        assert len(bad.built) <= 1  # never tried again


def test_driver_choice_is_validated_and_torch_means_none(monkeypatch):
    assert CusparseltGemm(driver="torch").driver is None
    monkeypatch.setenv("FST_CUSPARSELT_DRIVER", "fast")
    with pytest.raises(ValueError, match="auto, cupy, torch"):
        CusparseltGemm()


def _linear_step(lin, x, opt=None):
    lin(x).sum().backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()


def test_weight_operands_are_compressed_once_per_optimizer_step():
    torch.manual_seed(0)
    lin = fst.sparsify(nn.Linear(16, 32), "fst", "sparse24")
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    x = torch.randn(2, 5, 16, requires_grad=True)
    gemm = EmulatedGemm()
    with BE.emulate(gemm, timer=prefer_gemm):
        _linear_step(lin, x)  # first call: kernels timed, then one forward + backward
        base = dict(gemm.calls)
        hits = getattr(gemm, "pack_hits", 0)
        for _ in range(3):  # gradient accumulation: the weight is unchanged
            _linear_step(lin, x)
        assert gemm.calls["compress"] == base["compress"]  # Eq. 1 and Eq. 2 operands reused
        assert gemm.pack_hits == hits + 6
        _linear_step(lin, x, opt)  # the step changes W: both operands compressed again
        _linear_step(lin, x)
        assert gemm.calls["compress"] == base["compress"] + 2
        with torch.no_grad():
            lin.weight.copy_(torch.randn_like(lin.weight))  # any in-place write counts
        _linear_step(lin, x)
        assert gemm.calls["compress"] == base["compress"] + 4
        # and the cached result equals an uncached one
        gemm.cache_packs = False
        y_ref = lin(x)
        gemm.cache_packs = True
        torch.testing.assert_close(lin(x), y_ref)


def test_pack_cache_forgets_a_freed_parameter_and_can_be_cleared():
    gemm = EmulatedGemm()
    w = nn.Parameter(torch.randn(32, 16))
    a = _sparse(32, 16)
    owned = gemm.owned(w, "eq1")
    owned.matmul(a, torch.randn(16, 8))
    owned.matmul(a, torch.randn(16, 8))
    assert gemm.calls["compress"] == 1 and len(gemm._packs) == 1
    gemm.clear_packs()
    owned.matmul(a, torch.randn(16, 8))
    assert gemm.calls["compress"] == 2
    del owned, w
    assert len(gemm._packs) == 0
    gemm.cache_packs = False
    assert gemm.owned(nn.Parameter(torch.randn(2, 2)), "eq1") is gemm
