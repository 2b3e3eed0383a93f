"""Every strategy x backend on CUDA (fp32 and bf16 autocast, NCHW and channels-last) against the
``reference`` backend in float64 on CPU (the paper's equations in the im2col domain).

Errors are max |got - want| / max |want| per tensor (y, dX, dW, db). fp32 runs without TF32;
for bf16, x, dY and the weights are rounded to bf16 first on both sides, so that masks of
activations (``wg``, ``wx``, ``gg``, ``gx``) see the same values.
``sparse24`` refuses fp32 (cuSPARSELt's float32 is 1:2) with an error naming backend=native.
``fst_released`` is left out: its Eq. 3 patterns come from the device's RNG, which differs
between CPU and CUDA (tests/ops/test_released.py covers it on CPU).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fst
from fst.ops.cslt import SparseGemmError
from tests.gpu.conftest import needs_cuda, rel_err

pytestmark = [pytest.mark.gpu, needs_cuda]

KEYS = ["dense", "srste", "tsm", "fst2", "fst_noir", "fst", "wg", "wx", "gg", "gx"]
CONVS = [(5, 12, 3, 1, 1), (8, 16, 1, 2), (16, 8, 3, 2, 1), (16, 16, 3, 1, 1)]
TOL = {"fp32": 1e-4, "bf16": 5e-2}


def _bf16(t):
    return t.to(torch.bfloat16).double()


def _step(layer, x, dy):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy.to(y.dtype))
    out = {"y": y, "dX": x.grad, "dW": layer.weight.grad}
    if layer.bias is not None:
        out["db"] = layer.bias.grad
    return out


def _compare(make, x_shape, backend, precision, cl):
    for key in KEYS:
        torch.manual_seed(0)
        ref = fst.sparsify(make().double(), key, "reference", decay=0.1)
        got = fst.sparsify(make().cuda(), key, backend, decay=0.1)
        x = torch.randn(x_shape, dtype=torch.float64)
        with torch.no_grad():
            dy = torch.randn(ref(x).shape, dtype=torch.float64)
            if precision == "bf16":  # same values on both sides: masks of X, dY, W agree
                x, dy = _bf16(x), _bf16(dy)
                for p in ref.parameters():
                    p.copy_(_bf16(p))
        got.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
        want = _step(ref, x, dy)
        xg, dyg = x.float().cuda(), dy.float().cuda()
        if cl and xg.dim() == 4:
            xg = xg.contiguous(memory_format=torch.channels_last)
            dyg = dyg.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            have = _step(got, xg, dyg)
        for name in want:
            err = rel_err(have[name], want[name])
            assert err < TOL[precision], f"{key} {name}: rel. err {err:.3g} ({backend} {precision})"


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["reference", "native", "sparse24"])
def test_conv_on_cuda_matches_cpu_reference(backend, precision, cl, no_tf32):
    if backend == "sparse24" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("sparse24 needs compute capability >= 8.0")
    for args in CONVS:
        make = lambda args=args: nn.Conv2d(*args)  # noqa: E731
        shape = (2, args[0], 9, 7)
        if backend == "sparse24" and precision == "fp32":
            with pytest.raises(SparseGemmError, match="trainer.precision=bf16.*backend=native"):
                _compare(make, shape, backend, precision, cl)
            continue
        _compare(make, shape, backend, precision, cl)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["reference", "native", "sparse24"])
def test_linear_on_cuda_matches_cpu_reference(backend, precision, no_tf32):
    if backend == "sparse24" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("sparse24 needs compute capability >= 8.0")
    for shape in [(6, 24), (2, 10, 24)]:
        make = lambda: nn.Linear(24, 20)  # noqa: E731
        if backend == "sparse24" and precision == "fp32":
            with pytest.raises(SparseGemmError, match="trainer.precision=bf16"):
                _compare(make, shape, backend, precision, False)
            continue
        _compare(make, shape, backend, precision, False)
