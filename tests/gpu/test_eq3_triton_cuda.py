"""The fused Eq. 3 Triton kernel (fst.ops.eq3_triton) on a GPU, autotuned: against the unfused
``native`` formula in float64 on CPU (itself tested token by token in tests/test_tokens.py),
on odd layouts and ViT-sized ones, fp32 (no TF32) and bf16, with and without split reductions;
and a ViT block's Linear layers on ``sparse24`` (kernel on) against the ``reference`` backend.
The CPU twin under Triton's interpreter: tests/ops/test_eq3_triton.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fst
from fst.ops import eq3
from fst.ops.eq3_triton import fixed_weight_grad
from fst.tokens import TokenLayout
from tests.gpu.conftest import needs_cuda, needs_sparse_tensor_cores, rel_err

pytestmark = [pytest.mark.gpu]

# (batch, layout (prefix, rows, cols) or tokens, out, in)
SHAPES = [
    (2, (1, 3, 5), 10, 6),
    (1, (3, 2, 5), 18, 33),
    (3, 9, 11, 13),
    (2, (0, 7, 7), 64, 40),
    (4, (1, 14, 14), 3072, 768),  # ViT-B/16 fc1 at 224 px
    (2, (1, 16, 16), 1024, 4096),  # ViT-L/16 fc2 at 256 px
]


def _want(dy, x, key, layout, prefix_tokens):
    plan = fst.STRATEGIES.get(key).with_options(prefix_tokens=prefix_tokens)
    return eq3.linear_weight_grad(dy.double().cpu(), x.double().cpu(), plan, {}, layout)


@needs_cuda
@pytest.mark.parametrize("key,prefix_tokens", [("fst", "dense"), ("fst_noir", "include")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:1] + s[2:])))
def test_fused_eq3_on_cuda_matches_the_unfused_formula(
    shape, dtype, key, prefix_tokens, no_tf32, monkeypatch
):
    """Fixed tiles (autotuning every shape would compile ~6 configurations each: slow);
    the autotuned path is the next test's."""
    from fst.ops import eq3_triton

    monkeypatch.setattr(eq3_triton, "AUTOTUNE", False)
    torch.manual_seed(0)
    b, lay, o, i = shape
    layout = None if isinstance(lay, int) else TokenLayout(lay[0], lay[1:])
    t = lay if layout is None else layout.num_tokens
    dy = torch.randn(b, t, o, device="cuda").to(dtype)
    x = torch.randn(b, t, i, device="cuda").to(dtype)
    coef = 1.0 if key == "fst" else 0.0
    want = _want(dy, x, key, layout, prefix_tokens)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    for split in (None, 3):
        got = fixed_weight_grad(dy, x, coef, layout, prefix_tokens, split_k=split)
        assert torch.isfinite(got).all()
        err = rel_err(got, want)
        assert err < tol, f"split_k={split}: rel. err {err:.3g}"


@needs_cuda
def test_autotuned_fused_eq3_on_vit_l_fc1():
    from fst.ops import eq3_triton

    assert eq3_triton.AUTOTUNE
    torch.manual_seed(0)
    layout = TokenLayout(1, (14, 14))
    dy = torch.randn(8, 197, 4096, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(8, 197, 1024, device="cuda", dtype=torch.bfloat16)
    got = fixed_weight_grad(dy, x, 1.0, layout)
    assert rel_err(got, _want(dy, x, "fst", layout, "dense")) < 1e-2


@needs_cuda
def test_fused_eq3_compiles_as_one_opaque_op():
    layout = TokenLayout(1, (3, 5))
    dy = torch.randn(2, 16, 24, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(2, 16, 16, device="cuda", dtype=torch.bfloat16)
    fn = torch.compile(lambda a, b: fixed_weight_grad(a, b, 1.0, layout), fullgraph=True)
    torch.testing.assert_close(fn(dy, x), fixed_weight_grad(dy, x, 1.0, layout))


@needs_sparse_tensor_cores
@pytest.mark.parametrize("key", ["fst", "fst_noir"])
def test_vit_linear_on_sparse24_with_fused_eq3_matches_reference(key, monkeypatch):
    from fst.ops import sparse24

    calls = []
    real = sparse24.eq3_triton.fixed_weight_grad
    monkeypatch.setattr(
        sparse24.eq3_triton, "fixed_weight_grad", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    layout = TokenLayout(1, (6, 6))
    torch.manual_seed(0)
    ref = fst.sparsify(nn.Linear(64, 96).double(), key, "reference", decay=0.1)
    got = fst.sparsify(nn.Linear(64, 96).cuda(), key, "sparse24", decay=0.1)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).double())
    got.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    ref.token_layout = got.token_layout = layout
    x = torch.randn(4, layout.num_tokens, 64, dtype=torch.float64).to(torch.bfloat16).double()
    dy = torch.randn(4, layout.num_tokens, 96, dtype=torch.float64).to(torch.bfloat16).double()
    ref(x).backward(dy)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = got(x.float().cuda())
    y.backward(dy.to(y.dtype).cuda())
    assert calls, "the fused Eq. 3 kernel did not run"
    assert rel_err(got.weight.grad, ref.weight.grad) < 2e-2
