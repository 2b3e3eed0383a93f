"""``fst_released`` against a literal reimplementation of the released code, and the options.

The reimplementation follows the description in ``shared/paper/README.md`` step by step with
explicit loops (im2col chunks of ``min(256, batch)`` samples, the four X patterns, the 0.03
roll, the 4x4 regrouping of the twice-pruned weight) and does not call ``fst.ops``.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fst
from fst.masks import nm_mask
from fst.rules import released

BACKENDS = ["reference", "native"]


def literal_pattern(kind, rows, cols):
    keep = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        for c in range(cols):
            if kind == "b":
                keep[r, c] = c % 2 == 1  # zero every even column
            elif kind == "c":
                keep[r, c] = not ((r % 2 == 0 and c % 2 == 0) or (r % 2 == 1 and c % 2 == 1))
            elif kind == "d":
                keep[r, c] = (r % 2 == 0 and c % 2 == 0) or (r % 2 == 1 and c % 2 == 1)
            else:  # "a": the c checkerboard on X viewed as (-1, 4)
                f = r * cols + c
                rr, cc = divmod(f, 4)
                keep[r, c] = not ((rr % 2 == 0 and cc % 2 == 0) or (rr % 2 == 1 and cc % 2 == 1))
    return keep


def literal_regroup(w_fwd):
    """'(a w)(b h) -> (a b)(w h)' with w=4, h=1 on the flattened weight viewed as (-1, 4),
    zero the two smallest of each regrouped four, and undo the regrouping."""
    m = w_fwd.reshape(-1, 4).clone()
    for a in range(m.shape[0] // 4):
        for b in range(4):
            four = [m[4 * a + w, b] for w in range(4)]
            order = sorted(range(4), key=lambda i: abs(float(four[i])))  # ascending
            for i in order[:2]:
                m[4 * a + i, b] = 0.0
    return m.reshape(w_fwd.shape)


def literal_released_conv(x, w, b, dy, kind, stride, padding, step, decay):
    co = w.shape[0]
    Wm = w.reshape(co, -1)
    S_W = Wm * nm_mask(Wm, dim=1)
    y = F.conv2d(x, S_W.view_as(w), b, stride, padding)
    # Eq. 2 with the twice-pruned weight
    W2 = literal_regroup(S_W.view_as(w))
    dx = torch.nn.grad.conv2d_input(x.shape, W2, dy, stride, padding)
    # Eq. 3: chunks of `step` samples, X chunk is K x (step*H*W), sample-major columns
    n = x.shape[0]
    dW = torch.zeros_like(Wm)
    for s0 in range(0, n, step):
        xs = x[s0 : s0 + step]
        X = torch.cat(list(F.unfold(xs, w.shape[2:], 1, padding, stride)), dim=1)  # [K, step*L]
        g = dy[s0 : s0 + step].flatten(2)  # [s, Co, L]
        g = g + 0.03 * torch.roll(g, 1, dims=2)  # per sample, wraps inside H*W
        G = torch.cat(list(g), dim=1)  # [Co, step*L]
        keep = literal_pattern(kind, *X.shape)
        dW += G @ (X * keep).T
    dW += decay * (Wm - S_W)
    return y, dx, dW.view_as(w), dy.sum((0, 2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", released.PATTERNS)
def test_fst_released_conv_matches_literal(kind, backend):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, 2, 1).double()  # 8*4*9 = 288 = 18 blocks of 16
    x = torch.randn(5, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        dy = torch.randn_like(conv(x))
    want = literal_released_conv(
        x, conv.weight.detach(), conv.bias.detach(), dy, kind, 2, 1, 2, 2e-4
    )
    # batch 5 -> chunks of 2, 2, 1; one pattern forced (x_patterns of one letter)
    sparse_plan = fst.STRATEGIES["fst_released"].with_options(x_patterns=kind, im2col_step=2)
    conv = fst.sparsify(nn.Sequential(nn.Conv2d(4, 4, 1), conv), sparse_plan, backend)[1]
    assert conv.plan.forward == "nm"  # not the first conv
    xg = x.clone().requires_grad_(True)
    out = conv(xg)
    out.backward(dy)
    for got, exp in zip((out, xg.grad, conv.weight.grad, conv.bias.grad), want):
        torch.testing.assert_close(got.detach(), exp, atol=1e-10, rtol=1e-7)


def test_fst_released_model_layout():
    model = fst.sparsify(torchvision.models.resnet18(num_classes=10), "fst_released")
    rows = {r["name"]: r for r in fst.summary(model).rows}
    assert rows["conv1"]["status"] == "sparse" and rows["conv1"]["eq1"] == "W X"
    assert "P4(X^T)" in rows["conv1"]["eq3"]  # its X is still masked
    assert rows["fc"]["status"] == "dense" and "released" in rows["fc"]["note"]
    assert "NOT 2:4" in rows["layer1.0.conv1"]["eq2"]  # groups inside one filter, not along Co
    assert "ok" in rows["layer1.0.conv1"]["eq1"]


def test_pattern_draws_repeat_with_the_seed():
    torch.manual_seed(3)
    a = released.draw_patterns(50)
    torch.manual_seed(3)
    assert released.draw_patterns(50) == a
    assert set(a) == set(released.PATTERNS)
    state = torch.get_rng_state()
    assert released.draw_patterns(7, "c") == ["c"] * 7  # forced: draws nothing
    assert torch.equal(torch.get_rng_state(), state)


def grads_with(options, decay=0.0, backend="native"):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, 1, 1)
    x = torch.randn(3, 8, 6, 6, requires_grad=True)
    fst.sparsify(conv, "fst", backend, decay=decay, **options)
    torch.manual_seed(1)  # same pattern draws in every call
    y = conv(x)
    y.backward(torch.ones_like(y).cumsum(-1))
    return y.detach(), x.grad, conv.weight.grad


@pytest.mark.parametrize(
    "option,value,changes",
    [
        ("ir_coef", 0.03, {"dW"}),
        ("x_pattern", "random4", {"dW"}),
        ("wt_source", "pruned", {"dx"}),
        # Eq. 1 only: dx uses S(W^T) of the dense W, dW is dY X^T (decay 0, fixed dY)
        ("mask_layout", "cin", {"y"}),
    ],
)
def test_each_option_changes_exactly_its_gemm(option, value, changes):
    base = dict(zip(("y", "dx", "dW"), grads_with({})))
    new = dict(zip(("y", "dx", "dW"), grads_with({option: value})))
    changed = {k for k in base if not torch.allclose(base[k], new[k])}
    assert changed == changes


def test_random4_on_linear_tokens():
    torch.manual_seed(0)
    lin = fst.sparsify(nn.Linear(8, 8), "fst", x_pattern="random4", ir_coef=0.03, x_patterns="b")
    x = torch.randn(2, 6, 8, requires_grad=True)
    lin(x).sum().backward()
    # pattern b keeps odd token columns of each sample's X, after the roll of dY
    dy = torch.ones(2, 6, 8)
    g = dy + 0.03 * torch.roll(dy, 1, dims=1)
    keep = (torch.arange(6) % 2 == 1).float()[None, :, None]
    want = (g.reshape(-1, 8).T @ (x.detach() * keep).reshape(-1, 8)) + 2e-4 * (
        lin.weight.detach() - lin.weight.detach() * nm_mask(lin.weight.detach(), dim=1)
    )
    torch.testing.assert_close(lin.weight.grad, want)
