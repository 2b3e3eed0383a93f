"""Gradient fidelity: how far each strategy's backward pass is from the exact one (issue 24).

The paper explains Table 1 (GG/GX collapse, WG/WX train) by a conjecture (Sec. 4): sparse
reconstruction error of the gradient accumulates across layers during backpropagation; and
Table 5 by Information Restoration recovering what the fixed X^T mask drops (Sec. 5.3). Both
can be measured directly on one batch at given weights, which is what this module does.

**Exact.** A strategy prunes its forward weight (Eq. 1: W, S(W) or T(W)); the exact backward
pass of *that* forward network is the chain rule with no further pruning: Eq. 2 with the
forward weight (``fwd``), Eq. 3 ``dY X^T`` (:func:`exact_plan`). Strategies that share a forward
share the exact pass, so every error below is the error of the backward approximations alone
(Eq. 2 and 3), at the same weights, batch and forward. SR-STE's decay (Eq. 6) is a
regulariser, not part of the gradient: it is off (``decay=0``) throughout.

**Measures**, per sparse layer (every Conv2d / Linear the strategy converts, in the order the
forward pass calls them, i.e. depth order) and per strategy; ``rel`` is ``||a - b|| / ||b||``
and ``cos`` the cosine between the strategy's tensor ``a`` and the exact one ``b``:

- *local*: the layer's input gradient dX (Eq. 2) and weight gradient dW (Eq. 3) computed by the
  strategy from the layer's *exact* dY (captured in the exact backward pass). The layer itself
  is called with the strategy, so its backend runs the strategy's own GEMM rules
  (:mod:`fst.rules`); nothing is re-implemented here. The first layer has no dX (the input
  image needs none): its dX columns are empty.
- *propagated*: the whole backward pass run with the strategy from the loss down; dX and dW of
  each layer against the exact pass. The growth of this error with depth (from the loss back
  to the first layer) is what the conjecture is about.
- *training* (one row per strategy): ``cos`` and ``rel`` of the gradient of all parameters
  together (BatchNorm and biases included) against the exact one, and the one-step loss
  decrease: the loss on the same batch after one plain SGD step ``theta - lr * g`` with the
  strategy's g, against the same step with the exact g (``decrease_ratio`` = strategy's
  decrease / exact decrease; 1 = as good as exact, < 0 = the step increases the loss), and
  its small-step limit ``first_order_ratio`` = <g, g_exact> / |g_exact|^2.

The model is in training mode (batch statistics, as in training); buffers are restored before
every pass so each pass sees the same weights. Random rules (``mvue``, ``fst_released``'s
pattern choice) draw from the global generator, seeded per strategy.

Strategy names: the keys of :data:`fst.strategies.STRATEGIES` plus two analysis names:
``mvue_exact`` (``mvue`` with the minimum-variance estimator, ``estimator="exact"``) and
``wx_sort``, the upper bound FST's IR approaches: Eq. 3 ``dY S(X^T)`` with the magnitude
(sort-based) 2:4 mask of X^T and FST's Eq. 1 and 2 (S(W), S(W^T)). Its three GEMM rules are
exactly ``wx``'s (``fst.masks.nm_mask`` computes the sort's top-2-of-4 without a sort), so it is
computed once and reported under both names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import fst
from fst.layers import _SparseMixin
from fst.strategies import STRATEGIES, Strategy, get_strategy

__all__ = [
    "STUDIED",
    "ALIASES",
    "plan_of",
    "exact_plan",
    "Capture",
    "measure",
    "rel_err",
    "cosine",
]

# Issue 24's list, in the order the figure draws them.
STUDIED = (
    "dense",
    "srste",
    "tsm",
    "fst2",
    "fst_noir",
    "fst",
    "wx_sort",
    "wg",
    "wx",
    "gg",
    "gx",
    "mvue",
    "mvue_exact",
    "fst_released",
)
# Analysis names whose plan is another strategy's, computed once: name -> strategy computed.
ALIASES = {"wx_sort": "wx"}


def plan_of(name: str) -> Strategy:
    """The plan studied under ``name`` (a strategy key, ``mvue_exact`` or ``wx_sort``)."""
    if name == "mvue_exact":
        return get_strategy("mvue", estimator="exact").replace(name="mvue_exact")
    if name in ALIASES:
        return STRATEGIES.get(ALIASES[name]).replace(name=name)
    return STRATEGIES.get(name)


def exact_plan(plan: Strategy) -> Strategy:
    """The exact backward pass of ``plan``'s forward network: same Eq. 1 rule (and the same
    layers kept dense), Eq. 2 with the forward weight, Eq. 3 dense."""
    return Strategy(
        f"exact[{plan.forward}]",
        forward=plan.rules[0],  # with its options (mask_layout)
        input_grad="fwd",
        weight_grad="dense",
        dense_first_conv_weight=plan.dense_first_conv_weight,
        dense_linear=plan.dense_linear,
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (0 when both are 0, inf when only b is)."""
    nb = float(b.double().norm())
    nd = float((a.double() - b.double()).norm())
    if nb == 0:
        return 0.0 if nd == 0 else float("inf")
    return nd / nb


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine between the flattened tensors (1 when both are 0, 0 when one is)."""
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


class Capture:
    """Hooks on every Conv2d / Linear of a model recording, for one forward + backward: each
    layer's input X, its output gradient dY and its *own* input gradient dX (the input is
    routed through a fresh view, so a tensor shared by two layers, a residual block's input,
    gives each layer its own term, not the sum).

    ``order``: layer names in the order the forward pass called them (depth order).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = {
            n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
        }
        self.order: list[str] = []
        self.x: dict[str, torch.Tensor] = {}
        self.dy: dict[str, torch.Tensor] = {}
        self.dx: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_pre_hook(self._pre(name)))
            self._handles.append(m.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, args):
            if name in self.x:
                raise RuntimeError(f"layer {name!r} is called twice in one forward pass")
            self.order.append(name)
            x = args[0]
            self.x[name] = x.detach()
            if not (x.requires_grad and torch.is_grad_enabled()):
                return None
            x = x.view_as(x)
            x.register_hook(lambda g: self.dx.__setitem__(name, g.detach().clone()))
            return (x, *args[1:])

        return hook

    def _post(self, name):
        def hook(module, args, out):
            if out.requires_grad:
                out.register_hook(lambda g: self.dy.__setitem__(name, g.detach().clone()))

        return hook

    def reset(self) -> None:
        self.order, self.x, self.dy, self.dx = [], {}, {}, {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, target)


@dataclasses.dataclass
class _Pass:
    loss: float
    grads: dict[str, torch.Tensor]  # every parameter's gradient (zeros where None)
    x: dict[str, torch.Tensor]
    dy: dict[str, torch.Tensor]
    dx: dict[str, torch.Tensor]
    dw: dict[str, torch.Tensor]
    order: list[str]


def _run_pass(model, cap: Capture, buffers, inputs, target, loss_fn, seed) -> _Pass:
    model.load_state_dict(buffers, strict=False)
    cap.reset()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = loss_fn(model(inputs), target)
    loss.backward()
    grads = {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }
    dw = {n: cap.layers[n].weight.grad.detach().clone() for n in cap.order}
    out = _Pass(
        float(loss.detach()), grads, dict(cap.x), dict(cap.dy), dict(cap.dx), dw, list(cap.order)
    )
    model.zero_grad(set_to_none=True)
    return out


@torch.no_grad()
def _loss_after_step(model, cap, buffers, grads, lr, inputs, target, loss_fn, seed) -> float:
    """Loss on the batch after ``theta - lr * g`` (parameters restored afterwards)."""
    params = dict(model.named_parameters())
    saved = {n: p.detach().clone() for n, p in params.items()}
    for n, p in params.items():
        p.sub_(grads[n], alpha=lr)
    model.load_state_dict(buffers, strict=False)
    torch.manual_seed(seed)
    cap.reset()
    loss = float(loss_fn(model(inputs), target))
    cap.reset()
    for n, p in params.items():
        p.copy_(saved[n])
    return loss


def _local(model, cap: Capture, exact: _Pass, seed: int) -> dict[str, tuple]:
    """Per layer: (dX, dW) of the layer as configured now (the strategy), from the exact dY."""
    out = {}
    for i, name in enumerate(exact.order):
        m = cap.layers[name]
        if name not in exact.dy:
            continue
        need_x = name in exact.dx
        x = exact.x[name].clone().requires_grad_(need_x)
        torch.manual_seed(seed + 1000 + i)
        with torch.enable_grad():
            y = m.forward(x)  # not m(x): the capture hooks stay out of it
            wrt = [x, m.weight] if need_x else [m.weight]
            g = torch.autograd.grad(y, wrt, exact.dy[name])
        out[name] = (g[0] if need_x else None, g[-1])
    return out


def _errors(a: torch.Tensor | None, b: torch.Tensor | None) -> tuple:
    if a is None or b is None:
        return (float("nan"), float("nan"))
    return (rel_err(a, b), cosine(a, b))


def measure(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    strategies: Sequence[str] = STUDIED,
    lr: float = 0.02,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    backend: str = "native",
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Local and propagated errors per layer, and the training effect, of each strategy.

    Args:
        model: a dense model (converted in place while measuring and restored to dense, same
            weights, at the end); put in training mode.
        inputs, target: one batch; ``loss_fn(model(inputs), target)`` is the loss
            (default: cross-entropy).
        strategies: names (:data:`STUDIED`; aliases are computed once).
        lr: the SGD step of the one-step loss decrease.
        seed: seeds the global generator before every pass (random rules repeat).
    Returns:
        ``(layer_rows, step_rows)``: per (strategy, layer): ``strategy, depth, layer, kind
        (local|propagated), dx_rel, dx_cos, dw_rel, dw_cos``; per strategy: ``strategy,
        grad_rel, grad_cos, first_order_ratio, loss, decrease, exact_decrease,
        decrease_ratio``.
    """
    loss_fn = loss_fn or _cross_entropy
    model.train()
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    cap = Capture(model)
    plans = {name: plan_of(name) for name in strategies}
    groups: dict[Strategy, list[str]] = {}
    for name, plan in plans.items():
        groups.setdefault(exact_plan(plan), []).append(name)
    layer_rows: list[dict] = []
    step_rows: list[dict] = []
    computed: dict[str, tuple[list[dict], dict]] = {}
    try:
        for ref, names in groups.items():
            fst.sparsify(model, ref, backend, decay=0.0)
            exact = _run_pass(model, cap, buffers, inputs, target, loss_fn, seed)
            exact_after = _loss_after_step(
                model, cap, buffers, exact.grads, lr, inputs, target, loss_fn, seed
            )
            exact_dec = exact.loss - exact_after
            for name in names:
                src = ALIASES.get(name, name)
                if src in computed:
                    rows, step = computed[src]
                else:
                    if progress:
                        progress(name)
                    rows, step = _one_strategy(
                        model, cap, buffers, plans[name], exact, exact_dec,
                        lr, inputs, target, loss_fn, seed, backend,
                    )  # fmt: skip
                    computed[src] = (rows, step)
                layer_rows += [{"strategy": name, **r} for r in rows]
                step_rows.append({"strategy": name, **step})
    finally:
        cap.remove()
        fst.densify(model)
        model.load_state_dict(buffers, strict=False)
    return layer_rows, step_rows


def _one_strategy(model, cap, buffers, plan, exact, exact_dec, lr, inputs, target, loss_fn,
                  seed, backend):  # fmt: skip
    fst.sparsify(model, plan, backend, decay=0.0)
    sparse = {n for n, m in model.named_modules() if isinstance(m, _SparseMixin)}
    local = _local(model, cap, exact, seed)
    prop = _run_pass(model, cap, buffers, inputs, target, loss_fn, seed)
    if prop.order != exact.order:
        raise RuntimeError("the strategy's forward pass called the layers in another order")
    rows = []
    for depth, name in enumerate(exact.order):
        common = {"depth": depth, "layer": name, "sparse": name in sparse}
        if name in local:
            dx, dw = local[name]
            ex, cx = _errors(dx, exact.dx.get(name))
            ew, cw = _errors(dw, exact.dw[name])
            rows.append({**common, "kind": "local", "dx_rel": ex, "dx_cos": cx,
                         "dw_rel": ew, "dw_cos": cw})  # fmt: skip
        ex, cx = _errors(prop.dx.get(name), exact.dx.get(name))
        ew, cw = _errors(prop.dw[name], exact.dw[name])
        rows.append({**common, "kind": "propagated", "dx_rel": ex, "dx_cos": cx,
                     "dw_rel": ew, "dw_cos": cw})  # fmt: skip
    g = torch.cat([prop.grads[n].flatten() for n in exact.grads])
    ge = torch.cat([exact.grads[n].flatten() for n in exact.grads])
    after = _loss_after_step(model, cap, buffers, prop.grads, lr, inputs, target, loss_fn, seed)
    dec = exact.loss - after
    step = {
        "grad_rel": rel_err(g, ge),
        "grad_cos": cosine(g, ge),
        # first-order ratio of the decreases: lr <g, g_exact> / (lr |g_exact|^2)
        "first_order_ratio": float(g.double() @ ge.double()) / float(ge.double() @ ge.double())
        if float(ge.norm())
        else float("nan"),
        "loss": exact.loss,
        "decrease": dec,
        "exact_decrease": exact_dec,
        "decrease_ratio": dec / exact_dec if exact_dec else float("nan"),
    }
    return rows, step
