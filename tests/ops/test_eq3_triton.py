"""The fused Eq. 3 Triton kernel (fst.ops.eq3_triton) on CPU under Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before Triton compiles anything, so each check runs in a
subprocess. Checked: the kernel against the token-by-token formula of Eq. 7-10 (odd grid widths,
0/1/3 prefix tokens dense and included, no layout, channels not multiples of 4, batch 1,
split reductions, strided inputs; fp32 and bf16), and the ``sparse24`` backend with the kernel
switched on against the ``reference`` backend (fst, fst_noir) and against itself switched off.
The same on a GPU: tests/gpu/test_eq3_triton_cuda.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]

KERNEL = textwrap.dedent(
    """
    import torch
    from fst.ops.eq3_triton import available, fixed_weight_grad
    from fst.tokens import TokenLayout

    def literal(dy, x, coef, layout, prefix_tokens):
        # Eq. 3 token by token, in float64: rows of the grid, prefix dense or one row
        dy, x = dy.double().reshape(-1, *dy.shape[-2:]), x.double().reshape(-1, *x.shape[-2:])
        t = dy.shape[1]
        p, rows, cols = (0, 1, t) if layout is None else (layout.prefix, *layout.grid)
        segs = [(p, cols, rows, coef)]
        if p:
            segs.append((0, 1, p, 0.0) if prefix_tokens == "dense" else (0, p, 1, coef))
        dw = torch.zeros(dy.shape[-1], x.shape[-1], dtype=torch.float64)
        for b in range(dy.shape[0]):
            for start, width, nrows, ir in segs:
                for r in range(nrows):
                    for c in range(0, width, 2):
                        tok = start + r * width + c
                        g = dy[b, tok] + (ir * dy[b, tok + 1] if c + 1 < width else 0)
                        dw += torch.outer(g, x[b, tok])
        return dw

    torch.manual_seed(0)
    cases = [  # (batch dims, layout (prefix, rows, cols) or T, out, in, coef, prefix_tokens)
        ((2,), (1, 3, 5), 10, 6, 1.0, "dense"),
        ((2,), (2, 2, 3), 7, 9, 1.0, "include"),
        ((1,), (0, 3, 3), 5, 3, 0.0, "dense"),
        ((2,), (3, 2, 5), 18, 33, 0.5, "include"),
        ((2,), (3, 2, 5), 18, 33, 0.5, "dense"),
        ((1,), (1, 4, 4), 16, 16, 1.0, "dense"),
        ((2, 2), (1, 1, 1), 6, 5, 1.0, "dense"),
        ((3,), 9, 11, 13, 1.0, "dense"),
        ((2,), 8, 4, 4, 0.0, "dense"),
    ]
    n = 0
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        for bdims, lay, o, i, coef, pt in cases:
            layout = None if isinstance(lay, int) else TokenLayout(lay[0], lay[1:])
            t = lay if layout is None else layout.num_tokens
            dy = torch.randn(*bdims, t, o).to(dtype)
            x = torch.randn(*bdims, t, i).to(dtype)
            assert available(x)
            want = literal(dy, x, coef, layout, pt)
            for split in (1, 3):
                got = fixed_weight_grad(dy, x, coef, layout, pt, split_k=split)
                assert got.dtype == torch.float32 and got.shape == (o, i)
                err = float((got.double() - want).abs().max() / want.abs().max())
                assert err < tol, (dtype, lay, o, i, coef, pt, split, err)
                n += 1
    # strided operands: a transposed dY and a sliced X read through their strides
    layout = TokenLayout(1, (3, 5))
    dy = torch.randn(2, 12, 16).transpose(1, 2)
    x = torch.randn(2, 16, 20)[..., 3:17]
    err = (fixed_weight_grad(dy, x, 1.0, layout).double() - literal(dy, x, 1.0, layout, "dense"))
    assert float(err.abs().max()) < 1e-4
    print("ok", n)
    """
)

BACKEND = textwrap.dedent(
    """
    import torch
    from torch import nn
    import fst
    from fst.ops import sparse24
    from fst.tokens import TokenLayout

    BE = fst.BACKENDS.get("sparse24")
    calls = []
    real = sparse24.eq3_triton.fixed_weight_grad
    sparse24.eq3_triton.fixed_weight_grad = lambda *a, **k: calls.append(1) or real(*a, **k)

    def grads(backend, key, layout, x, dy, fused=True, **opts):
        torch.manual_seed(1)
        lin = nn.Linear(x.shape[-1], dy.shape[-1]).to(x.dtype)
        lin = fst.sparsify(lin, key, backend, decay=0.1, **opts)
        lin.token_layout = layout
        xg = x.clone().requires_grad_(True)
        BE.fused_eq3 = fused
        with BE.emulate():
            lin(xg).backward(dy)
        return lin.weight.grad, xg.grad, lin.bias.grad

    torch.manual_seed(0)
    n = 0
    for key in ("fst", "fst_noir"):
        for (p, r, c), pt in (((1, 3, 5), "dense"), ((2, 2, 3), "include"), ((0, 3, 3), "dense")):
            layout = TokenLayout(p, (r, c))
            x = torch.randn(2, layout.num_tokens, 12)
            dy = torch.randn(2, layout.num_tokens, 10)
            ref = grads("reference", key, layout, x.double(), dy.double(), prefix_tokens=pt)
            before = len(calls)
            got = grads("sparse24", key, layout, x, dy, prefix_tokens=pt)
            assert len(calls) == before + 1, "the fused kernel did not run"
            for a, b in zip(got, ref):
                torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)
            off = grads("sparse24", key, layout, x, dy, fused=False, prefix_tokens=pt)
            assert len(calls) == before + 1, "FST_SPARSE24_FUSED_EQ3=0 still ran the kernel"
            for a, b in zip(got, off):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            n += 1
    # bf16 under autocast: the fused path against the unfused one, both on sparse24
    layout = TokenLayout(1, (3, 5))
    x, dy = torch.randn(2, 16, 12), torch.randn(2, 16, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads("sparse24", "fst", layout, x, dy)
        off = grads("sparse24", "fst", layout, x, dy, fused=False)
    rel = float((got[0] - off[0]).abs().max() / off[0].abs().max())
    assert rel < 2e-2, rel
    # other Eq. 3 rules never take the kernel
    before = len(calls)
    grads("sparse24", "srste", layout, x, dy)
    assert len(calls) == before
    print("ok", n)
    """
)


COMPILED = textwrap.dedent(
    """
    import torch
    from torch import nn
    import fst
    from fst.ops import sparse24
    from fst.tokens import TokenLayout

    BE = fst.BACKENDS.get("sparse24")
    calls = []
    real = sparse24.eq3_triton._launch
    sparse24.eq3_triton._launch = lambda *a, **k: calls.append(1) or real(*a, **k)
    prefer_gemm = lambda fn, device, label: 0.0 if label.endswith(":gemm") else 1.0
    x = torch.randn(2, 16, 12)
    grads = []
    for compiled in (False, True):
        torch.manual_seed(1)
        lin = fst.sparsify(nn.Linear(12, 16), "fst", "sparse24", decay=0.1)
        lin.token_layout = TokenLayout(1, (3, 5))
        with BE.emulate(timer=prefer_gemm):
            lin(x.requires_grad_(True)).sum().backward()  # the eager first call decides
            lin.weight.grad = None
            m = torch.compile(lin, backend="aot_eager", fullgraph=True) if compiled else lin
            before = len(calls)
            m(x).sum().backward()
            assert len(calls) == before + 1, "the fused Eq. 3 op did not run"
            grads.append(lin.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    print("ok compiled")
    """
)


def _run(code: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_fused_eq3_kernel_matches_the_token_formula_under_the_interpreter():
    assert "ok 36" in _run(KERNEL)


def test_sparse24_with_the_fused_eq3_matches_reference_under_the_interpreter():
    assert "ok 6" in _run(BACKEND)


def test_fused_eq3_traces_as_one_op_in_a_full_graph():
    """Under torch.compile (aot_eager, fullgraph) the kernel is the custom op fst::eq3_fixed."""
    assert "ok compiled" in _run(COMPILED)


def test_fused_eq3_needs_cuda_or_the_interpreter(monkeypatch):
    import torch

    from fst.ops import eq3_triton

    monkeypatch.setattr(eq3_triton, "_INTERPRET", False)
    assert not eq3_triton.available(torch.zeros(2, 3, 4))


def test_segments_follow_the_token_layout():
    from fst.ops.eq3_triton import kept, segments_of
    from fst.tokens import TokenLayout

    assert segments_of(9, 1.0) == [(0, 9, 1, 1.0)]
    lay = TokenLayout(1, (14, 14))
    assert segments_of(197, 1.0, lay) == [(0, 1, 1, 0.0), (1, 14, 14, 1.0)]
    assert segments_of(197, 0.0, lay, "include") == [(0, 1, 1, 0.0), (1, 14, 14, 0.0)]
    assert kept(segments_of(197, 1.0, lay)) == 1 + 14 * 7
    assert kept(segments_of(16, 1.0, TokenLayout(1, (3, 5)))) == 1 + 3 * 3
    with pytest.raises(ValueError, match="197 tokens"):
        segments_of(196, 1.0, lay)
