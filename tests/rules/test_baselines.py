"""Table 3's other baselines against literal implementations of their own papers.

Every expected value here is computed from the method's algorithm as its paper (and release,
where the paper is silent) states it, with plain tensor code: im2col matrices for the GEMMs,
``torch.sort`` / ``argsort`` for the selections, explicit SGD updates for the training loops.
Nothing here calls the fst rule, mask or sparsifier functions it checks; the randomness a
method draws (RigL's initial mask, ReSprop's sampled example) is read from the sparsifier and
fed to the literal version as an input.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fst

BACKENDS = ["reference", "native"]


def _unfold(x, w, pad):
    return F.unfold(x, w.shape[2:], padding=pad)  # [N, K, L]


def _keep_top(a: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of the ``keep`` largest entries of 1-D ``a`` (by a full descending sort)."""
    mask = torch.zeros_like(a, dtype=torch.bool)
    mask[torch.sort(a, descending=True).indices[:keep]] = True
    return mask


def _layer_grads(layer, x, dy):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


# ------------------------------------------------------------------------------------ meProp


def _meprop_literal_conv(x, w, b, dy, ratio, pad):
    """Sun et al. 2017, Sec. 2: keep the top-k |dY| of each example, use it in Eq. 2 and 3."""
    n, co = x.shape[0], w.shape[0]
    X = _unfold(x, w, pad)
    Wm = w.reshape(co, -1)
    y = torch.einsum("ok,nkl->nol", Wm, X) + b[None, :, None]
    G = dy.reshape(n, co, -1)
    Gk = torch.zeros_like(G)
    for i in range(n):
        g = G[i].reshape(-1)
        k = g.numel() - math.floor(ratio * g.numel())
        keep = _keep_top(g.abs(), k)
        Gk[i] = (g * keep).view_as(G[i])
    dx = F.fold(torch.einsum("ok,nol->nkl", Wm, Gk), x.shape[2:], w.shape[2:], padding=pad)
    dW = torch.einsum("nol,nkl->ok", Gk, X).reshape(w.shape)
    return y.reshape(dy.shape), dx, dW, G.sum((0, 2))  # the bias gradient stays dense


@pytest.mark.parametrize("backend", BACKENDS)
def test_meprop_conv_matches_literal_top_k_per_example(backend):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 6, 3, padding=1).double()
    x = torch.randn(3, 5, 7, 9, dtype=torch.float64)
    dy = torch.randn(3, 6, 7, 9, dtype=torch.float64)
    want = _meprop_literal_conv(x, conv.weight.detach(), conv.bias.detach(), dy, 0.5, 1)
    fst.sparsify(conv, "meprop", backend)
    for name, g, e in zip(("y", "dx", "dW", "db"), _layer_grads(conv, x, dy), want):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4, 10), (2, 3, 10)], ids=["mlp", "tokens"])
def test_meprop_linear_matches_literal(backend, shape):
    """A 2-D input is the paper's own MLP case: top-k of each row of dY, also in Eq. 3."""
    torch.manual_seed(1)
    lin = nn.Linear(10, 7).double()
    x = torch.randn(shape, dtype=torch.float64)
    dy = torch.randn(*shape[:-1], 7, dtype=torch.float64)
    w = lin.weight.detach()
    gk = torch.zeros_like(dy)
    for i in range(dy.shape[0]):
        g = dy[i].reshape(-1)
        keep = _keep_top(g.abs(), g.numel() - math.floor(0.5 * g.numel()))
        gk[i] = (g * keep).view_as(dy[i])
    want_dx = gk @ w
    want_dw = gk.reshape(-1, 7).T @ x.reshape(-1, 10)
    fst.sparsify(lin, "meprop", backend)
    _, dx, dw, db = _layer_grads(lin, x, dy)
    torch.testing.assert_close(dx, want_dx, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(dw, want_dw, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(db, dy.reshape(-1, 7).sum(0))


def test_meprop_reaches_its_ratio_per_example():
    from fst.rules import INPUT_GRAD_RULES

    torch.manual_seed(2)
    dy = torch.randn(5, 6, 7, 3)
    out = INPUT_GRAD_RULES["topk_dy"].prune_dy(dy, 1, fst.STRATEGIES["meprop"])
    per_example = (out == 0).reshape(5, -1).sum(1)
    assert per_example.tolist() == [math.floor(0.5 * 126)] * 5


# ----------------------------------------------------------------------------------- ReSprop


@pytest.mark.parametrize("backend", BACKENDS)
def test_resprop_matches_literal_reuse_of_previous_gradient(backend):
    """Goli & Aamodt 2020: G' = P + S(G - P), P one example's dY of the previous iteration,
    used in Eq. 2 and Eq. 3; the first iteration has nothing to reuse."""
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 8, 3, padding=1).double()
    w = conv.weight.detach().clone()
    fst.sparsify(conv, "resprop", backend)
    sp = fst.build_sparsifier(conv, total_steps=10, steps_per_epoch=5, seed=7)
    state = sp.state["weight"]
    xs = [torch.randn(3, 4, 6, 5, dtype=torch.float64) for _ in range(3)]
    dys = [torch.randn(3, 8, 6, 5, dtype=torch.float64) for _ in range(3)]
    prev = None
    for x, dy in zip(xs, dys):
        pick = state["pick"]  # the sparsifier's draw is an input of the literal version
        conv.weight.grad = conv.bias.grad = None
        got = _layer_grads(conv, x, dy)
        G = dy
        if prev is not None:  # literal: P + keep-top-50% of |G - P| over the layer's tensor
            diff = (G - prev).reshape(-1)
            keep = _keep_top(diff.abs(), diff.numel() - math.floor(0.5 * diff.numel()))
            G = prev + (diff * keep).view_as(G)
        X = _unfold(x, w, 1)
        Wm = w.reshape(8, -1)
        Gf = G.reshape(3, 8, -1)
        dx = F.fold(torch.einsum("ok,nol->nkl", Wm, Gf), (6, 5), (3, 3), padding=1)
        dW = torch.einsum("nol,nkl->ok", Gf, X).reshape(w.shape)
        torch.testing.assert_close(got[1], dx, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(got[2], dW, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(got[3], dy.sum((0, 2, 3)))  # bias: the plain dY
        if prev is not None:  # reaches its ratio: half of the difference is reused
            assert int(((G - prev) == 0).sum()) == math.floor(0.5 * G.numel())
        prev = dy[min(int(pick * 3), 2)]  # the example kept for the next iteration
        sp.step()


# ----------------------------------------------------------------------------- training loops


def _net():
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 16)
    ).double()


def _batches(steps):
    g = torch.Generator().manual_seed(5)
    return [
        (
            torch.randn(4, 16, 4, 4, generator=g, dtype=torch.float64),
            torch.randn(4, 16, generator=g, dtype=torch.float64),
        )
        for _ in range(steps)
    ]


def _functional(params, x):
    """The net of :func:`_net` on explicit tensors ``[W1, b1, W2, b2]``."""
    w1, b1, w2, b2 = params
    return F.linear(F.relu(F.conv2d(x, w1, b1, padding=1)).flatten(1), w2, b2)


def _grads(weff, x, t):
    """Gradient of the loss at the given (effective) parameters."""
    leaves = [p.detach().clone().requires_grad_(True) for p in weff]
    loss = F.mse_loss(_functional(leaves, x), t)
    return torch.autograd.grad(loss, leaves)


def _train_fst(key, backend, steps, spe, lr, momentum=0.0, **schedule):
    """Our side: fst.sparsify + the strategy's sparsifier, stepped after the optimizer."""
    net = _net()
    fst.sparsify(net, key, backend)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    sp = fst.build_sparsifier(net, opt, total_steps=steps, steps_per_epoch=spe, **schedule)
    return net, opt, sp


def _run(net, opt, sp, batches, on_step=None):
    for t, (x, target) in enumerate(batches, 1):
        opt.zero_grad()
        F.mse_loss(net(x), target).backward()
        opt.step()
        sp.step()
        if on_step:
            on_step(t)


def _masked(net, sp):
    """Effective weights W * M of the two layers (what the forward multiplies)."""
    out = []
    for name, m in (("0.weight", net[0]), ("3.weight", net[3])):
        mask = sp.state[name].get("mask")
        out.append(m.weight.detach() * mask if mask is not None else m.weight.detach())
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpf_matches_literal_algorithm(backend):
    """Lin et al. 2020, Alg. 1: the gradient at the pruned model updates the dense W; the mask
    is the magnitude top of the dense W, recomputed every p steps on Zhu & Gupta's schedule."""
    steps, p, lr, target, ramp = 12, 3, 0.05, 0.5, 0.5
    net, opt, sp = _train_fst("dpf", backend, steps, 4, lr, update_every=p, ramp_end=ramp)
    batches = _batches(steps)
    params = [t.detach().clone() for t in net.parameters()]  # W1, b1, W2, b2
    masks = [torch.ones_like(params[0], dtype=torch.bool), torch.ones_like(params[2]).bool()]
    seen = []
    for t, (x, target_y) in enumerate(batches, 1):
        weff = [params[0] * masks[0], params[1], params[2] * masks[1], params[3]]
        g = _grads(weff, x, target_y)
        params = [w - lr * gi for w, gi in zip(params, g)]  # the dense model moves
        if t % p == 0:
            tr = ramp * steps
            s = target if t >= tr else target * (1 - (1 - t / tr) ** 3)
            masks = []
            for w in (params[0], params[2]):
                a = w.abs().reshape(-1)
                masks.append(_keep_top(a, a.numel() - math.floor(s * a.numel())).view_as(w))
        seen.append([m.clone() for m in masks])
    got_masks = []
    _run(
        net,
        opt,
        sp,
        batches,
        lambda t: got_masks.append(
            [sp.state["0.weight"]["mask"].clone(), sp.state["3.weight"]["mask"].clone()]
        ),
    )
    for t, (want, got) in enumerate(zip(seen, got_masks), 1):
        assert all(torch.equal(a, b) for a, b in zip(want, got)), f"mask at step {t}"
    for got, want in zip(net.parameters(), params):  # dense weights, pruned ones included
        torch.testing.assert_close(got.detach(), want, atol=1e-10, rtol=1e-8)
    # reaches the target: every layer half pruned after the ramp
    for m in got_masks[-1]:
        assert int((~m).sum()) == math.floor(0.5 * m.numel())


@pytest.mark.parametrize("backend", BACKENDS)
def test_rigl_matches_literal_algorithm(backend):
    """Evci et al. 2020, Alg. 1 (with the SGD step also taken on update steps, see
    fst/sparsifier/rigl.py): masked gradients with momentum; every dT steps drop the k
    smallest active |W|, grow the k largest dense |grad| outside the kept set, k from the
    cosine-decayed fraction; grown weights and their momentum start at zero."""
    steps, dt, lr, mu, alpha, end = 12, 3, 0.05, 0.9, 0.3, 0.75
    net, opt, sp = _train_fst(
        "rigl", backend, steps, 4, lr, momentum=mu, update_every=dt, drop_fraction=alpha,
        end=end, dense_first_layer=False,
    )  # fmt: skip
    masks = [sp.state["0.weight"]["mask"].clone(), sp.state["3.weight"]["mask"].clone()]
    for m in masks:  # the random start already has the exact ratio
        assert int((~m).sum()) == math.floor(0.5 * m.numel())
    batches = _batches(steps)
    params = [t.detach().clone() for t in net.parameters()]
    bufs = [torch.zeros_like(p) for p in params]
    t_end = end * steps
    for t, (x, target_y) in enumerate(batches, 1):
        weff = [params[0] * masks[0], params[1], params[2] * masks[1], params[3]]
        g = list(_grads(weff, x, target_y))
        dense = [g[0], g[2]]
        g[0], g[2] = g[0] * masks[0], g[2] * masks[1]  # inactive weights get no gradient
        bufs = [mu * b + gi for b, gi in zip(bufs, g)]
        params = [w - lr * b for w, b in zip(params, bufs)]
        if t % dt == 0 and t < t_end:
            frac = alpha / 2 * (1 + math.cos(math.pi * t / t_end))
            for j, (i, grad) in enumerate(zip((0, 2), dense)):
                w, m = params[i].reshape(-1), masks[j].reshape(-1)
                k = math.floor(frac * int(m.sum()))
                order = torch.sort(torch.where(m, w.abs(), math.inf)).indices  # active, small first
                kept = m.clone()
                kept[order[:k]] = False
                grow = _keep_top(torch.where(kept, -math.inf, grad.abs().reshape(-1)), k)
                new = grow & ~m
                w[new] = 0.0
                bufs[i].view(-1)[new] = 0.0
                masks[j] = (kept | grow).view_as(masks[j])
    _run(net, opt, sp, batches)
    for name, want in (("0.weight", masks[0]), ("3.weight", masks[1])):
        assert torch.equal(sp.state[name]["mask"], want), name
        assert int((~want).sum()) == math.floor(0.5 * want.numel())  # target kept throughout
    got = _masked(net, sp)
    torch.testing.assert_close(got[0], params[0] * masks[0], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(got[1], params[2] * masks[1], atol=1e-10, rtol=1e-8)
    assert (net[0].weight.detach()[~masks[0]] == 0).all()  # pruned weights are zero


def _asfp_rates(target, epochs, d):
    """He et al. 2019: P_t = a exp(-k t) + b through P_0 = 0, P_D = 3/4 target, P_E = target,
    solved with numpy for E = 4 D: u = exp(-k D) is the real root of u^3 + u^2 + u - 1/3."""
    assert epochs == 4 * d
    roots = np.roots([1.0, 1.0, 1.0, -1.0 / 3.0])
    u = float(next(r.real for r in roots if abs(r.imag) < 1e-12 and 0 < r.real < 1))
    k = -math.log(u) / d
    a = target / (math.exp(-k * epochs) - 1)  # P_E = a e^{-kE} + b with b = -a
    rates = [a * math.exp(-k * t) - a for t in range(epochs + 1)]
    assert abs(rates[0]) < 1e-12 and abs(rates[d] - 0.75 * target) < 1e-9
    return rates


@pytest.mark.parametrize("backend", BACKENDS)
def test_asfp_matches_literal_soft_filter_pruning(backend):
    """SFP/ASFP: train W as it is; after each epoch zero the floor(P_e * Co) filters of least
    L2 norm of every conv (Linear untouched); zeroed filters keep training."""
    epochs, spe, lr, target = 4, 2, 0.05, 0.3
    net, opt, sp = _train_fst("asfp", backend, epochs * spe, spe, lr, target=target)
    rates = _asfp_rates(target, epochs, 1)
    batches = _batches(epochs * spe)
    params = [t.detach().clone() for t in net.parameters()]
    for t, (x, target_y) in enumerate(batches, 1):
        g = _grads(params, x, target_y)
        params = [w - lr * gi for w, gi in zip(params, g)]
        if t % spe == 0:
            w = params[0]
            n = math.floor(rates[t // spe] * w.shape[0])
            order = torch.argsort(w.reshape(w.shape[0], -1).norm(dim=1))
            w[order[:n]] = 0.0
    _run(net, opt, sp, batches)
    for got, want in zip(net.parameters(), params):
        torch.testing.assert_close(got.detach(), want, atol=1e-10, rtol=1e-8)
    zero_filters = int((net[0].weight.detach().reshape(16, -1) == 0).all(1).sum())
    assert zero_filters == math.floor(target * 16)  # the final rate: 30% of the filters
    assert [sp.rate(e) for e in range(1, 5)] == pytest.approx(rates[1:], abs=1e-9)


def _m4n2_1d(mat):
    """apex ASP's m4n2_1d: in each group of 4 consecutive entries of a row keep the 2 largest."""
    groups = mat.abs().reshape(-1, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, torch.sort(groups, dim=1, descending=True).indices[:, :2], True)
    return mask.view_as(mat)


def _apex_mask(w):
    """apex create_mask: conv (Co, Ci, kh, kw) permuted to (kh, kw, Co, Ci), pruned along Ci."""
    if w.dim() == 2:
        return _m4n2_1d(w)
    co, ci, kh, kw = w.shape
    t = w.permute(2, 3, 0, 1).reshape(kh * kw * co, ci)
    return _m4n2_1d(t).view(kh, kw, co, ci).permute(2, 3, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_asp_matches_literal_recipe(backend):
    """Mishra et al. 2021 / apex ASP: dense steps, one-shot m4n2_1d magnitude mask, then the
    gradient masked before and the weights masked after every step."""
    steps, spe, lr, dense_steps = 8, 4, 0.05, 3
    net, opt, sp = _train_fst("asp", backend, steps, spe, lr, dense_epochs=dense_steps / spe)
    assert sp.state["0.weight"]["mask"] is None  # dense phase
    batches = _batches(steps)
    params = [t.detach().clone() for t in net.parameters()]
    masks = None
    for t, (x, target_y) in enumerate(batches, 1):
        g = list(_grads(params, x, target_y))
        if masks:
            g[0], g[2] = g[0] * masks[0], g[2] * masks[1]
        params = [w - lr * gi for w, gi in zip(params, g)]
        if t == dense_steps:
            masks = [_apex_mask(params[0]), _apex_mask(params[2])]
        if masks:
            params[0], params[2] = params[0] * masks[0], params[2] * masks[1]
    _run(net, opt, sp, batches)
    assert torch.equal(sp.state["0.weight"]["mask"], masks[0])
    assert torch.equal(sp.state["3.weight"]["mask"], masks[1])
    for got, want in zip(net.parameters(), params):
        torch.testing.assert_close(got.detach(), want, atol=1e-10, rtol=1e-8)
    for m in masks:  # the target: exactly 2 of every 4 along Ci / in
        assert int((~m).sum()) == m.numel() // 2


def test_asp_skips_layers_apex_cannot_accelerate():
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16, 10))
    fst.sparsify(net, "asp")
    sp = fst.build_sparsifier(net, total_steps=4, steps_per_epoch=2, dense_epochs=0)
    assert sp.state["0.weight"]["skipped"] and sp.state["2.weight"]["skipped"]
    assert sp.state["0.weight"]["mask"] is None  # Ci = 3, out = 10: apex leaves them dense
