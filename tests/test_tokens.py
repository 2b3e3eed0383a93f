"""Eq. 3 along a vision transformer's tokens: the patch grid's rows, the prefix tokens.

The oracle below is written from Eq. 7-10 of the paper, token by token, for a Linear layer
whose input is ``[B, T, C]`` with ``T = P + R * Cg``: P prefix tokens (class, register,
distillation), then an R x Cg patch grid in raster order. F keeps the patches of even grid
column (0-based); IR adds the right neighbour *in the same grid row* onto each kept patch's dY.
The prefix tokens' ``dY X^T`` is added unpruned (``prefix_tokens="dense"``) or, with
``"include"``, the P prefix tokens are one more row of their own. It calls nothing of fst but
``nm_mask`` for the S(.) rows.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fst
from fst.masks import nm_mask
from fst.tokens import TokenLayout, set_vit_token_layout, token_layout_of, vit_token_layout

BACKENDS = ["reference", "native"]
DECAY = 0.1
# (prefix, rows, cols): a class token with an odd number of patches per row, two prefix tokens
# (DeiT's class + distillation) on a 2x3 grid, no prefix, an even grid, three prefix tokens.
LAYOUTS = [(1, 3, 5), (2, 2, 3), (0, 3, 3), (1, 4, 4), (3, 2, 5)]
EQ3_KEYS = ["fst", "fst_noir", "wg", "wx", "gx"]


def fixed_row_eq3(dy_row, x_row, ir):
    """Eq. 10 on one row of tokens: sum over even columns c of (dY_c + ir dY_{c+1}) X_c^T."""
    dw = torch.zeros(dy_row.shape[-1], x_row.shape[-1], dtype=dy_row.dtype)
    n = dy_row.shape[0]
    for c in range(0, n, 2):
        g = dy_row[c] + (ir * dy_row[c + 1] if c + 1 < n else 0)
        dw += torch.outer(g, x_row[c])
    return dw


def literal_eq3(dy, x, key, layout, prefix_tokens):
    """dW of Eq. 3 for one Linear, token by token, per sample, per grid row."""
    p, rows, cols = layout
    ir = 1.0 if key == "fst" else 0.0
    dw = torch.zeros(dy.shape[-1], x.shape[-1], dtype=dy.dtype)
    for b in range(dy.shape[0]):
        pre_dy, pre_x = dy[b, :p], x[b, :p]
        pat_dy, pat_x = dy[b, p:], x[b, p:]
        # the prefix: unpruned, or one row of its own
        if p and prefix_tokens == "dense":
            dw += pre_dy.T @ pre_x
        elif p:
            dw += row_eq3(pre_dy, pre_x, key, ir)
        # the patches
        if key in ("fst", "fst_noir"):
            for r in range(rows):
                sl = slice(r * cols, (r + 1) * cols)
                dw += fixed_row_eq3(pat_dy[sl], pat_x[sl], ir)
        else:  # S(dY) / S(X^T): groups of 4 consecutive patches of the flattened grid
            dw += row_eq3(pat_dy, pat_x, key, ir)
    return dw


def row_eq3(dy_row, x_row, key, ir):
    if key in ("fst", "fst_noir"):
        return fixed_row_eq3(dy_row, x_row, ir)
    if key == "wg":
        return (dy_row * nm_mask(dy_row, dim=0)).T @ x_row
    return dy_row.T @ (x_row * nm_mask(x_row, dim=0))  # wx, gx: S(X^T)


def sparse_linear(layout, key, backend, prefix_tokens="dense", seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(6, 8).double()
    fst.sparsify(lin, key, backend, decay=DECAY, prefix_tokens=prefix_tokens)
    p, rows, cols = layout
    lin.token_layout = TokenLayout(p, (rows, cols))
    return lin


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prefix_tokens", ["dense", "include"])
@pytest.mark.parametrize("key", EQ3_KEYS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda t: f"p{t[0]}_{t[1]}x{t[2]}")
def test_token_axis_eq3_matches_literal(layout, key, prefix_tokens, backend):
    lin = sparse_linear(layout, key, backend, prefix_tokens)
    w = lin.weight.detach().clone()
    p, rows, cols = layout
    x = torch.randn(2, p + rows * cols, 6, dtype=torch.float64)
    dy = torch.randn(2, p + rows * cols, 8, dtype=torch.float64)
    lin(x).backward(dy)
    want = literal_eq3(dy, x, key, layout, prefix_tokens)
    w1 = w * nm_mask(w, dim=1)  # every key here prunes W in Eq. 1 with S(W)
    want = want + DECAY * (w - w1)
    torch.testing.assert_close(lin.weight.grad, want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_token_is_never_paired_with_a_patch(backend):
    """Only the class token's dY changes: its X^T column stays, no patch gains its gradient."""
    lin = sparse_linear((1, 3, 5), "fst", backend)
    x = torch.randn(1, 16, 6, dtype=torch.float64)
    dy = torch.zeros(1, 16, 8, dtype=torch.float64)
    dy[0, 0] = 1.0  # gradient on the class token only
    lin(x).backward(dy)
    decay = DECAY * (lin.weight.detach() - lin.weight.detach() * nm_mask(lin.weight, dim=1))
    torch.testing.assert_close(lin.weight.grad - decay, torch.outer(dy[0, 0], x[0, 0]))
    # and a gradient on the first patch alone reaches only its own (kept) column
    lin.weight.grad = None
    dy = torch.zeros(1, 16, 8, dtype=torch.float64)
    dy[0, 1] = 1.0
    lin(x).backward(dy)
    torch.testing.assert_close(lin.weight.grad - decay, torch.outer(dy[0, 1], x[0, 1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ir_stops_at_the_end_of_each_grid_row(backend):
    """With 5 patches per row the last one (column 4) is kept without a neighbour; the first
    patch of the next row is pruned and must not flow into it."""
    lin = sparse_linear((1, 3, 5), "fst", backend)
    x = torch.randn(1, 16, 6, dtype=torch.float64)
    dy = torch.zeros(1, 16, 8, dtype=torch.float64)
    dy[0, 1 + 5] = 1.0  # row 1, column 0: kept, gets nothing from row 0's column 4
    dy[0, 1 + 5 + 1] = 2.0  # row 1, column 1: pruned, IR adds it onto column 0
    lin(x).backward(dy)
    decay = DECAY * (lin.weight.detach() - lin.weight.detach() * nm_mask(lin.weight, dim=1))
    want = torch.outer(dy[0, 6] + dy[0, 7], x[0, 6])
    torch.testing.assert_close(lin.weight.grad - decay, want)


def test_native_fast_path_equals_reference_in_float32():
    torch.manual_seed(3)
    x = torch.randn(4, 1 + 7 * 7, 12)
    dy = torch.randn(4, 1 + 7 * 7, 16)
    grads = []
    for backend in BACKENDS:
        torch.manual_seed(4)
        lin = fst.sparsify(nn.Linear(12, 16), "fst", backend)
        lin.token_layout = TokenLayout(1, (7, 7))
        lin(x).backward(dy)
        grads.append(lin.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_layout_mismatch_fails_naming_the_fix():
    lin = sparse_linear((1, 3, 5), "fst", "native")
    with pytest.raises(ValueError, match=r"1 prefix \+ 3x5 grid = 16 tokens.*dynamic_img_size"):
        lin(torch.randn(2, 17, 6, dtype=torch.float64))


def test_unknown_prefix_option_lists_choices():
    with pytest.raises(ValueError, match=r"prefix_tokens='drop'.*dense.*include"):
        fst.sparsify(nn.Linear(4, 4), "fst", prefix_tokens="drop")
    with pytest.raises(ValueError, match=r"prefix_tokens='include' has no effect with .*'fst2'"):
        fst.sparsify(nn.Linear(4, 4), "fst2", prefix_tokens="include")


def tiny_vit(**kw):
    import timm

    args = dict(img_size=20, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw})


def test_layout_read_from_timm_vits():
    import timm

    assert vit_token_layout(tiny_vit()) == TokenLayout(1, (5, 5))
    assert vit_token_layout(tiny_vit(reg_tokens=4)) == TokenLayout(5, (5, 5))
    assert vit_token_layout(tiny_vit(class_token=False, global_pool="avg")) == TokenLayout(
        0, (5, 5)
    )
    deit = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        img_size=16,
        patch_size=4,
        embed_dim=16,
        depth=1,
        num_heads=2,
    )
    assert vit_token_layout(deit) == TokenLayout(2, (4, 4))
    # token sequences that change from input to input have no fixed layout
    assert vit_token_layout(tiny_vit(dynamic_img_size=True)) is None
    assert vit_token_layout(tiny_vit(patch_drop_rate=0.5)) is None
    assert vit_token_layout(timm.create_model("test_resnet")) is None


def test_sparsify_sets_the_layout_on_the_blocks_only():
    model = fst.sparsify(tiny_vit(), "fst")
    layouts = {n: token_layout_of(m) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert layouts.pop("head") is None  # pooled [B, C] input
    assert set(layouts) == {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1",
                            "blocks.0.mlp.fc2"}  # fmt: skip
    assert set(layouts.values()) == {TokenLayout(1, (5, 5))}
    model(torch.randn(2, 3, 20, 20)).sum().backward()
    text = str(fst.summary(model))
    assert "tokens: 1 prefix + 5x5 grid, prefix dense in Eq. 3" in text
    assert "grid width 5: F(X^T) not 2:4" in text  # odd rows: honest about the 2:4 claim
    assert "attention GEMMs Q K^T and A V stay dense in all 1 attention modules" in text
    # clearing it returns to one flat row
    assert set_vit_token_layout(model, None) == 0
    assert token_layout_of(model.blocks[0].mlp.fc1) is None
