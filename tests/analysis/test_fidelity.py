"""Gradient fidelity (fst.analysis.fidelity) against hand-computed errors on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fst.analysis import fidelity
from fst.masks import apply_mask, nm_mask


def _rows(rows, strategy, kind):
    return [r for r in rows if r["strategy"] == strategy and r["kind"] == kind]


def test_dense_has_zero_error():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4),
    )  # fmt: skip
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    rows, steps = fidelity.measure(model, x, y, ["dense", "gg"])
    dense = [r for r in rows if r["strategy"] == "dense"]
    assert len(_rows(rows, "dense", "propagated")) == 3 and len(_rows(rows, "dense", "local")) == 3
    for r in dense:
        assert r["dw_rel"] == 0.0 and r["dw_cos"] == pytest.approx(1.0)
        if r["depth"] == 0:  # the image needs no dX
            assert math.isnan(r["dx_rel"])
        else:
            assert r["dx_rel"] == 0.0
    step = next(s for s in steps if s["strategy"] == "dense")
    assert step["grad_rel"] == 0.0 and step["decrease_ratio"] == pytest.approx(1.0)
    gg = next(s for s in steps if s["strategy"] == "gg")
    assert gg["grad_rel"] > 0.01  # the test can fail: gg does prune
    # the model is dense again, with the same weights
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in model if hasattr(m, "weight")
               and not isinstance(m, nn.BatchNorm2d))  # fmt: skip


def _dot_loss(out, target):
    return (out * target).sum()  # dY of the last layer = target


def test_two_layer_propagated_error_is_the_hand_computed_one():
    """y = L2(L1(x)) on tokens, strategy gg, loss <y, G>. Exact (forward S(W)): dY2 = G,
    dY1 = G S(W2), dW1 = dY1^T x. gg: Eq. 2 W^T S_out(dY), Eq. 3 S_tokens(dY) X^T, so the
    propagated dY1 = S_out(G) W2 and dW1 = S_tokens(S_out(G) W2)^T x."""
    torch.manual_seed(1)
    l1, l2 = nn.Linear(8, 8, bias=False), nn.Linear(8, 4, bias=False)
    model = nn.Sequential(l1, l2).double()
    w1, w2 = l1.weight.detach().clone(), l2.weight.detach().clone()
    x = torch.randn(2, 8, 8, dtype=torch.float64)  # [batch, tokens, in]
    g = torch.randn(2, 8, 4, dtype=torch.float64)
    rows, _ = fidelity.measure(model, x, g, ["gg"], loss_fn=_dot_loss)
    s = lambda t, dim: apply_mask(t, nm_mask(t, dim=dim))  # noqa: E731
    sw1, sw2 = s(w1, 1), s(w2, 1)
    x1 = x @ sw1.T
    # exact
    dy1 = g @ sw2
    dw1 = torch.einsum("bto,bti->oi", dy1, x)
    dw2 = torch.einsum("bto,bti->oi", g, x1)
    # gg, propagated from the loss down
    dy1_gg = s(g, -1) @ w2
    dw1_gg = torch.einsum("bto,bti->oi", s(dy1_gg, -2), x)
    dw2_gg = torch.einsum("bto,bti->oi", s(g, -2), x1)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    prop = {r["layer"]: r for r in _rows(rows, "gg", "propagated")}
    assert prop["1"]["dw_rel"] == pytest.approx(rel(dw2_gg, dw2), rel=1e-9)
    assert prop["0"]["dw_rel"] == pytest.approx(rel(dw1_gg, dw1), rel=1e-9)
    assert prop["1"]["dx_rel"] == pytest.approx(rel(dy1_gg, dy1), rel=1e-9)
    # local error of layer 0 uses the exact dY1, so it differs from the propagated one
    local = {r["layer"]: r for r in _rows(rows, "gg", "local")}
    local_dw1 = torch.einsum("bto,bti->oi", s(dy1, -2), x)
    assert local["0"]["dw_rel"] == pytest.approx(rel(local_dw1, dw1), rel=1e-9)
    assert local["0"]["dw_rel"] != pytest.approx(prop["0"]["dw_rel"])


def test_gg_local_error_on_a_constructed_dy():
    """One Linear, W = I (S(W) = W), X = I over 4 tokens, dY[t, o] = b_t a_o with a = b =
    [3, -2, 1, 0.5]: S(dY) along out keeps a_0, a_1 (Eq. 2), along tokens b_0, b_1 (Eq. 3),
    so dX and dW both lose the share sqrt((1 + 0.25) / (9 + 4 + 1 + 0.25)) = 0.2962."""
    lin = nn.Linear(4, 4, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4, dtype=torch.float64))
    a = torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=torch.float64)
    dy = (a[:, None] * a[None, :])[None]  # [1, tokens, out]
    x = torch.eye(4, dtype=torch.float64)[None]
    rows, _ = fidelity.measure(lin, x, dy, ["gg", "wg", "dense"], loss_fn=_dot_loss)
    want = math.sqrt(1.25 / 14.25)
    (gg,) = _rows(rows, "gg", "local")
    assert gg["dw_rel"] == pytest.approx(want, rel=1e-9)
    (wg,) = _rows(rows, "wg", "local")
    assert wg["dw_rel"] == pytest.approx(want, rel=1e-9)  # the same Eq. 3 rule
    # dX: the first layer's input is the data (no dX) -- feed it through an identity first
    model = nn.Sequential(nn.Identity(), lin)
    xg = x.clone().requires_grad_(True)
    rows, _ = fidelity.measure(model, xg, dy, ["gg", "wg"], loss_fn=_dot_loss)
    (gg,) = _rows(rows, "gg", "local")
    (wg,) = _rows(rows, "wg", "local")
    assert gg["dx_rel"] == pytest.approx(want, rel=1e-9)
    assert wg["dx_rel"] == pytest.approx(0.0, abs=1e-12)  # S(W^T) of I is I: exact dX


def test_aliases_and_exact_groups():
    assert fidelity.plan_of("wx_sort").rules == fidelity.plan_of("wx").rules
    assert fidelity.plan_of("mvue_exact").estimator == "exact"
    ex = fidelity.exact_plan(fidelity.plan_of("gg"))
    assert (ex.forward, ex.input_grad, ex.weight_grad) == ("nm", "fwd", "dense")
    assert fidelity.exact_plan(fidelity.plan_of("fst")) == ex
    assert fidelity.exact_plan(fidelity.plan_of("mvue")).forward == "tsm"
