"""``sparse24``'s host-side logic on CPU: kernels, layouts, choice cache, checks, fallbacks, errors.

The cuSPARSELt GEMM is replaced by :class:`fst.ops.cslt.EmulatedGemm` (a dense matmul of the
masked operand that *checks* the 2:4 pattern along rows, the row/column-major layout and the
alignment cuSPARSELt assumes), so every layout and transposition of the backend is tested for
numerical equality with the ``reference`` backend (the paper's equations in the im2col domain)
in float64. A fake timer decides which kernel the one-time timing picks.
"""

import pytest
import torch
from torch import nn

import fst
from fst.ops import BACKENDS
from fst.ops.cslt import (
    ALIGN_SPARSE,
    CusparseltGemm,
    EmulatedGemm,
    SparseGemmError,
    require_sparse_tensor_cores,
)
from fst.ops.sparse24 import Sparse24Backend, eligible_kernels

STRATEGIES = ["dense", "srste", "tsm", "fst2", "fst_noir", "fst", "wg", "wx", "gg", "gx"]
STRATEGIES += ["fst_released"]
BE = BACKENDS.get("sparse24")


def prefer(kernel):
    """A fake timer under which ``kernel`` is the fastest (then dense, then the rest)."""
    calls = []

    def timer(fn, device, label):
        fn()
        calls.append(label)
        name = label.split(":")[1]
        return 0.0 if name == kernel else (1.0 if name == "dense" else 2.0)

    timer.calls = calls
    return timer


def _train_step(m, x0, cl, seed=2):
    x = x0.clone()
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    torch.manual_seed(seed)  # fst_released draws its Eq. 3 patterns from the global RNG
    y = m(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    y.backward(g)
    grads = [m.weight.grad] + ([m.bias.grad] if getattr(m, "bias", None) is not None else [])
    return [y.detach(), x.grad] + grads


def _conv_pair(args, strategy, opts):
    used = fst.STRATEGIES[strategy].options_used()
    opts = {k: v for k, v in opts.items() if k in used}  # options others refuse
    out = []
    for backend in ("reference", "sparse24"):
        torch.manual_seed(1)
        m = nn.Conv2d(*args).double()
        out.append(fst.sparsify(m, strategy, backend, decay=0.1, **opts))
    return out


CONVS = [  # (in, out, k, stride, padding, dilation), options, input HxW
    ((6, 8, 1), {}, (9, 7)),  # 1x1: gemm
    ((6, 10, 1, 2), {}, (9, 7)),  # 1x1 stride 2, odd sizes: gemm with scatter
    ((5, 12, 3, 1, 1), {}, (9, 7)),  # Ci % 4 != 0, K = 45: im2col (+ taps for Eq. 2)
    ((8, 12, 3, 2, 1), {}, (9, 7)),  # stride 2: im2col only
    ((8, 12, 3, 1, 2, 2), {"mask_layout": "cin"}, (9, 8)),  # dilation 2, cin: taps
    ((7, 6, (3, 1), 1, (1, 0)), {}, (6, 5)),  # non-square kernel, Co % 4 != 0
]


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kernel", ["gemm", "im2col", "taps"])
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: "x".join(map(str, c[0])) + str(c[1]))
def test_conv_kernels_match_reference(conv, kernel, cl):
    """Every strategy through ``kernel`` (where it may run) equals the reference in float64."""
    args, opts, hw = conv
    x0 = torch.randn(2, args[0], *hw, dtype=torch.float64)
    ran = 0
    for strategy in STRATEGIES:
        ref, sp = _conv_pair(args, strategy, opts)
        expected = _train_step(ref, x0, cl)
        gemm = EmulatedGemm()
        with BE.emulate(gemm, timer=prefer(kernel)):
            got = _train_step(sp, x0, cl)
            rec = BE.layers.get(sp.weight)
            route = None if rec is None else rec.routes[rec.last_key]
        for name, a, b in zip(("y", "dx", "dW", "db"), got, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"{strategy} {name}")
        if route is not None and kernel in (route.eq1, route.eq2):
            ran += 1
            assert gemm.calls["mm"] > 0
            assert rec.fallback is None and "checked vs native" in rec.checks[rec.last_key]
    geom = fst.ops.ConvGeometry.of(nn.Conv2d(*args))
    wshape = nn.Conv2d(*args).weight.shape
    plan = fst.STRATEGIES.get("fst").with_options(**opts)
    k1, _, k2, _ = eligible_kernels("conv", wshape, geom, plan)
    assert (ran > 0) == (kernel in k1 or kernel in k2)


@pytest.mark.parametrize("shape", [(5, 12), (2, 7, 12)], ids=["2d", "tokens"])
def test_linear_gemm_matches_reference(shape):
    x0 = torch.randn(*shape, dtype=torch.float64)
    for strategy in STRATEGIES:
        mods = []
        for backend in ("reference", "sparse24"):
            torch.manual_seed(1)
            mods.append(fst.sparsify(nn.Linear(12, 10).double(), strategy, backend, decay=0.1))
        expected = _train_step(mods[0], x0, False)
        with BE.emulate(timer=prefer("gemm")):
            got = _train_step(mods[1], x0, False)
            rec = BE.layers.get(mods[1].weight)
        for name, a, b in zip(("y", "dx", "dW", "db"), got, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"{strategy} {name}")
        if strategy in ("fst", "tsm"):
            assert rec.routes[rec.last_key].eq1 == rec.routes[rec.last_key].eq2 == "gemm"


def test_eligible_kernels_follow_the_operands_grouping():
    S = fst.STRATEGIES
    g1 = fst.ops.ConvGeometry((1, 1), (1, 1), (1, 1))
    g2 = fst.ops.ConvGeometry((2, 2), (1, 1), (1, 1))
    w3 = torch.Size((64, 64, 3, 3))
    assert eligible_kernels("conv", w3, g1, S.get("fst"))[::2] == (
        ["dense", "im2col"],
        ["dense", "im2col", "taps"],
    )
    cin = S.get("fst").with_options(mask_layout="cin")
    assert eligible_kernels("conv", w3, g1, cin)[0] == ["dense", "taps"]
    k1, note1, _, _ = eligible_kernels("conv", w3, g2, cin)  # no exact sparse Eq. 1 at stride 2
    assert k1 == ["dense"] and "stride 1" in note1
    w1 = torch.Size((256, 64, 1, 1))
    g0 = fst.ops.ConvGeometry((2, 2), (0, 0), (1, 1))
    assert eligible_kernels("conv", w1, g0, S.get("tsm"))[::2] == (["dense", "gemm"],) * 2
    _, _, k2, note2 = eligible_kernels("conv", w1, g0, S.get("srste"))
    assert k2 == ["dense"] and "S(W)^T is not 2:4 along Co" in note2  # SR-STE: chain rule
    assert "not 2:4 along Co" in eligible_kernels("linear", (8, 8), None, S.get("fst_released"))[3]
    assert "dY" in eligible_kernels("linear", (8, 8), None, S.get("gg"))[3]


def test_emulated_gemm_checks_what_cusparselt_assumes():
    gemm = EmulatedGemm()
    a = torch.randn(20, 37, dtype=torch.float64)
    a = a * fst.masks.nm_mask(a, dim=1)  # 2:4 along K (the last group partial)
    packed = gemm.compress(a)
    assert packed.padded == (32, 48) and packed.padded[0] % ALIGN_SPARSE == 0
    b = torch.randn(37, 13, dtype=torch.float64)
    bias = torch.randn(20, dtype=torch.float64)
    want = a @ b + bias[:, None]
    torch.testing.assert_close(gemm.mm(packed, b, bias), want)  # row-major B
    torch.testing.assert_close(gemm.mm(packed, b.t().contiguous().t(), bias), want)  # col-major
    torch.testing.assert_close(gemm.mm(packed, b, bias, transpose_result=True), want.t())
    with pytest.raises(SparseGemmError, match="not 2:4 along its rows"):
        gemm.compress(torch.ones(16, 16, dtype=torch.float64))
    with pytest.raises(SparseGemmError, match="neither row- nor column-major"):
        gemm.mm(packed, torch.randn(37, 26, dtype=torch.float64)[:, ::2])
    with pytest.raises(SparseGemmError, match="K differs"):
        gemm.mm(packed, torch.randn(36, 8, dtype=torch.float64))
    with pytest.raises(SparseGemmError, match="must match"):
        gemm.mm(packed, b.float())


def test_choice_is_timed_once_per_shape_and_shared():
    timer = prefer("im2col")
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)).double()
    fst.sparsify(model, "fst", "sparse24")
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with BE.emulate(timer=timer):
        model(x).sum().backward()
        model(x).sum().backward()
        # both layers share one shape (the sparse kernels return channels-last outputs)
        timed = ["eq1:dense", "eq1:im2col", "eq2:dense", "eq2:im2col", "eq2:taps"]
        assert sorted(timer.calls) == timed
        (choice,) = BE.choices.values()
        assert (choice.route.eq1, choice.route.eq2) == ("im2col", "im2col")
        table = BE.choices_table()
        assert "| conv 8x8x3x3 s1 p1 | 2x8x6x6 | im2col |" in table
        notes = [r["note"] for r in fst.summary(model).rows]
        assert all("eq1 im2col (cuSPARSELt), eq2 im2col (cuSPARSELt)" in n for n in notes)
        assert all("checked vs native" in n for n in notes)
        # a new input shape is timed (and checked) again
        x2 = torch.randn(1, 8, 5, 5, dtype=torch.float64).contiguous(
            memory_format=torch.channels_last
        )
        model(x2.requires_grad_()).sum().backward()
        assert len(BE.choices) == 2


def test_dense_wins_when_faster_and_no_grad_skips_eq2():
    m = fst.sparsify(nn.Conv2d(4, 8, 1).double(), "fst", "sparse24")
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with BE.emulate(timer=prefer("dense")) as be:
        m(x.requires_grad_()).sum().backward()
        route = be.layers[m.weight].routes[be.layers[m.weight].last_key]
        assert (route.eq1, route.eq2) == ("dense", "dense")
        assert "eq1 dense (faster), eq2 dense (faster)" in fst.summary(m).rows[0]["note"]
    with BE.emulate(timer=prefer("gemm")) as be, torch.no_grad():
        m(x)
        route = be.layers[m.weight].routes[be.layers[m.weight].last_key]
        assert (route.eq1, route.eq2) == ("gemm", "none")


class _BrokenGemm(EmulatedGemm):
    """Multiplies by the wrong operand orientation: what a layout bug would do."""

    def _mm(self, data, b, bias, transpose_result):
        c = super()._mm(data, b, bias, transpose_result)
        return c.flip(0)


class _FailingGemm(EmulatedGemm):
    def _mm(self, data, b, bias, transpose_result):
        raise RuntimeError("CUSPARSE_STATUS_NOT_SUPPORTED (simulated)")


@pytest.mark.parametrize(
    "gemm_cls, reason", [(_BrokenGemm, "mismatch vs native"), (_FailingGemm, "check failed")]
)
def test_layer_falls_back_to_native_on_mismatch_or_error(gemm_cls, reason, monkeypatch):
    monkeypatch.setattr(BE, "mode", "sparse")  # no timing: a failing kernel reaches the check
    x0 = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    ref, sp = _conv_pair((8, 8, 3, 1, 1), "fst", {})
    expected = _train_step(ref, x0, False)
    with BE.emulate(gemm_cls(), timer=prefer("im2col")) as be:
        got = _train_step(sp, x0, False)
        rec = be.layers[sp.weight]
        assert rec.fallback and reason in rec.fallback
        assert f"sparse24: runs as native ({reason}" in fst.summary(sp).rows[0]["note"]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_failing_kernel_is_not_a_candidate():
    m = fst.sparsify(nn.Conv2d(8, 8, 3, padding=1).double(), "fst", "sparse24")
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)

    def timer(fn, device, label):
        if label == "eq1:im2col":
            raise RuntimeError("no algorithm for this shape (simulated)")
        return {"eq1:dense": 1.0, "eq2:dense": 1.0}.get(label, 0.5)

    with BE.emulate(timer=timer) as be:
        m(x).sum().backward()
        (choice,) = be.choices.values()
        assert choice.route.eq1 == "dense" and choice.route.eq2 in ("im2col", "taps")
        assert "no algorithm" in choice.errors["eq1:im2col"]


def test_choosing_kernels_leaves_the_global_rng_alone():
    m = fst.sparsify(nn.Conv2d(8, 8, 3, padding=1).double(), "fst", "sparse24")
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    with BE.emulate():
        state = torch.get_rng_state()
        m(x)
        assert torch.equal(state, torch.get_rng_state())


def test_bf16_autocast_on_cpu_matches_native():
    x0 = torch.randn(2, 16, 6, 6)
    outs = []
    for backend in ("native", "sparse24"):
        torch.manual_seed(1)
        m = fst.sparsify(nn.Conv2d(16, 16, 3, padding=1), "fst", backend)
        with BE.emulate(timer=prefer("im2col")), torch.autocast("cpu", dtype=torch.bfloat16):
            x = x0.clone().requires_grad_()
            y = m(x)
            y.float().sum().backward()
            if backend == "sparse24":
                route = BE.layers[m.weight].routes[BE.layers[m.weight].last_key]
                assert route.eq1 == "im2col"
        outs.append((y.float(), x.grad, m.weight.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.03, atol=0.03)


def test_errors_name_the_fix(monkeypatch):
    m = fst.sparsify(nn.Conv2d(4, 4, 1), "fst", "sparse24")
    x = torch.randn(1, 4, 2, 2)
    with pytest.raises(SparseGemmError, match="this input is on cpu.*use backend=native"):
        m(x)  # the real cuSPARSELt GEMM on a CPU tensor
    with BE.emulate(EmulatedGemm(dtypes=(torch.bfloat16, torch.float16))):
        with pytest.raises(SparseGemmError, match=r"float32.*1:2.*trainer.precision=bf16.*native"):
            m(x)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    with pytest.raises(SparseGemmError, match="T4 has compute capability 7.5.*>= 8.0.*native"):
        require_sparse_tensor_cores(cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: False)
    with pytest.raises(SparseGemmError, match="no cuSPARSELt.*native"):
        require_sparse_tensor_cores(cuda)
    assert isinstance(BE.gemm, CusparseltGemm) and BE.needs_cuda


def test_dense_plan_and_dense_mode_run_as_native(monkeypatch):
    m = fst.sparsify(nn.Conv2d(4, 4, 3), "dense", "sparse24")
    m(torch.randn(1, 4, 5, 5))  # no CUDA needed: nothing to run on sparse tensor cores
    monkeypatch.setenv("FST_SPARSE24_KERNELS", "dense")
    be = Sparse24Backend(EmulatedGemm())
    assert be.mode == "dense"
    monkeypatch.setenv("FST_SPARSE24_KERNELS", "fastest")
    with pytest.raises(ValueError, match="auto, sparse, dense"):
        Sparse24Backend()


def test_summary_before_first_forward():
    m = fst.sparsify(nn.Sequential(nn.Conv2d(4, 4, 3)), "fst", "sparse24")
    with BE.emulate():
        assert "sparse24: not run yet" in fst.summary(m).rows[0]["note"]
