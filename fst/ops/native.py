"""``native`` backend: every strategy with the fastest dense kernels of the device.

- Eq. 1: ``F.conv2d`` / ``F.linear`` with the masked weight.
- Eq. 2: the input-gradient convolution (``aten.convolution_backward``) with the Eq. 2
  rule's weight (dense W, the forward weight, S(W^T), ...) and its dY (S(dY) for ``gg``/``gx``).
- Eq. 3: the rule's operands (:meth:`fst.rules.weight_grad.WeightGradRule.operands`): a
  masked dY goes through the weight-gradient convolution, a masked X through im2col. One
  rule has a faster path here, tested against the rule:
- Eq. 3 for ``fst``/``fst_noir`` (``weight_grad="fixed"``): only the kept half is computed.
  With F(X^T) keeping even output columns, ``sum_{w even} dY'(h, w) X(h, w)^T`` is exactly
  the dense weight gradient of the same conv with width stride ``2 * s_w`` over the
  IR-combined half ``dY'(h, w) = dY(h, w) + ir_coef * dY(h, w + 1)`` (w even): half of Eq. 3's
  work on every device. For Linear the kept half is every even token of each row: the whole
  token axis, or the rows of a vision transformer's patch grid (:mod:`fst.tokens`).
- Masks of W and W^T are computed once per forward and saved for backward.
- Eager CPU: the element-wise work (masks, SR-STE decay, IR half) runs on as few threads as its
  size merits (:mod:`fst.threads`), so its cost does not depend on the machine's load. Under
  ``torch.compile`` both Functions are traced whole (forward and backward, no graph break) and
  inductor fuses that work into a few kernels (:mod:`fst.compile`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fst.ops.base import BACKENDS, Backend, ConvGeometry, add_decay, autocast_dtype, cast
from fst.rules import weight_operands, with_state
from fst.strategies import Strategy
from fst.threads import work_threads

_conv_bwd = torch.ops.aten.convolution_backward.default


def _every_other(t: torch.Tensor, dim: int, start: int) -> torch.Tensor:
    idx = [slice(None)] * t.dim()
    idx[dim] = slice(start, None, 2)
    return t[tuple(idx)]


def _elementwise(t: torch.Tensor):
    """Eager CPU element-wise work over ``t`` runs on as few threads as its size merits
    (:func:`fst.threads.work_threads`: each small op would pay a thread barrier, which costs
    milliseconds while another process holds a core); compiled or on a GPU: no change."""
    if torch.compiler.is_compiling() or t.device.type != "cpu":
        return contextlib.nullcontext()
    return work_threads(t.numel())


def ir_half(dy: torch.Tensor, coef: float, dim: int) -> torch.Tensor:
    """The IR-combined kept half along ``dim``: ``dy[2i] + coef * dy[2i + 1]`` (0 past the end).

    One fused pass over ``dy`` (Eq. 10's shift and add restricted to the columns F keeps). An
    odd length's last kept column has no right neighbour: the odd columns get one zero column
    (plain ops, no ``out=`` into a strided view, so ``torch.compile`` traces it whole). Eager
    CPU: on as few threads as its size merits (:func:`_elementwise`).
    """
    dim = dim % dy.dim()
    n = dy.shape[dim]
    even = _every_other(dy, dim, 0)
    with _elementwise(dy):
        if not coef or n < 2:
            return even.contiguous()
        odd = _every_other(dy, dim, 1)
        if n % 2:
            odd = F.pad(odd, [0, 0] * (dy.dim() - 1 - dim) + [0, 1])
        return torch.add(even, odd, alpha=coef)


def masked_weights(weight: torch.Tensor, plan: Strategy, need_bwd: bool = True, state=None):
    """:func:`fst.rules.weight_operands` as the layers run it (see :func:`_elementwise`)."""
    with _elementwise(weight):
        return weight_operands(weight, plan, need_bwd, state)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geom: ConvGeometry, plan: Strategy, decay: float, state):
        w_fwd, w_bwd = masked_weights(weight, plan, ctx.needs_input_grad[0], state)
        dt = autocast_dtype(x)
        xc, wf, wb, b = cast(dt, x, w_fwd, w_bwd, bias)
        if wb is None:  # Eq. 2 is never run; convolution_backward still needs a weight shape
            wb = wf
        with torch.autocast(x.device.type, enabled=False):
            y = F.conv2d(xc, wf, b, geom.stride, geom.padding, geom.dilation)
        ctx.save_for_backward(xc, wb, weight, w_fwd)
        ctx.geom, ctx.plan, ctx.decay, ctx.kw = geom, plan, decay, with_state(state)
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xc, wb, weight, w_fwd = ctx.saved_tensors
        g, plan, kw = ctx.geom, ctx.plan, ctx.kw
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dy = dy.to(xc.dtype)
        args = (g.stride, g.padding, g.dilation, False, [0, 0], 1)
        dx = dw = db = None
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        eq2, eq3 = plan.rules[1], plan.rules[2]
        # One call serves Eq. 2 and 3 when both use the plain dY (the common case).
        if not eq2.prunes_dy and not eq3.prunes:
            dx, dw, db = _conv_bwd(dy, xc, wb, bias_sizes, *args, [need_x, need_w, need_b])
        else:
            if need_x:
                dyi = eq2.prune_dy(dy, 1, plan, **kw)
                dx = _conv_bwd(dyi, xc, wb, None, *args, [True, False, False])[0]
            if need_b:
                db = dy.sum((0, 2, 3))
            if need_w:
                dw = _conv_weight_grad(dy, xc, wb, g, plan, kw)
        if dw is not None:
            with _elementwise(weight):
                dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        if dx is not None:
            dx = dx.to(ctx.x_dtype)
        if db is not None:
            db = db.to(weight.dtype)
        return dx, dw, db, None, None, None, None


def _conv_weight_grad(dy, xc, wb, g: ConvGeometry, plan: Strategy, kw: dict) -> torch.Tensor:
    """Eq. 3 for a conv: ``dW = dY' X'^T`` with the plan's Eq. 3 rule (``kw``: the layer's
    state for stateful plans, :func:`fst.rules.with_state`)."""
    rule = plan.rules[2]
    if rule.kept_half(plan) is not None:
        dy_half = ir_half(dy, plan.ir_coef, dim=3)
        stride = (g.stride[0], 2 * g.stride[1])
        args = (stride, g.padding, g.dilation, False, [0, 0], 1)
        return _conv_bwd(dy_half, xc, wb, None, *args, [False, True, False])[1]
    wo = dy.shape[3]
    if rule.prunes_x:  # X itself is masked: im2col [N, K, L], one column per output position
        cols = F.unfold(xc, wb.shape[2:], g.dilation, g.padding, g.stride)
        dyf, cols = rule.operands(dy.flatten(2), cols, plan, dim=-1, width=wo, **kw)
        return torch.einsum("nol,nkl->ok", dyf, cols).reshape(wb.shape)
    dyf, _ = rule.operands(dy.flatten(2), None, plan, dim=-1, width=wo, **kw)
    args = (g.stride, g.padding, g.dilation, False, [0, 0], 1)
    return _conv_bwd(dyf.view_as(dy), xc, wb, None, *args, [False, True, False])[1]


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, plan: Strategy, decay: float, state, tokens=None):
        w_fwd, w_bwd = masked_weights(weight, plan, ctx.needs_input_grad[0], state)
        dt = autocast_dtype(x)
        xc, wf, wb, b = cast(dt, x, w_fwd, w_bwd, bias)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(xc, wf, b)
        ctx.save_for_backward(xc, wb, weight, w_fwd)
        ctx.plan, ctx.decay, ctx.kw, ctx.tokens = plan, decay, with_state(state), tokens
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xc, wb, weight, w_fwd = ctx.saved_tensors
        plan, kw = ctx.plan, ctx.kw
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dy = dy.to(xc.dtype)
        dx = dw = db = None
        if need_x:
            dx = (plan.rules[1].prune_dy(dy, -1, plan, **kw) @ wb).to(ctx.x_dtype)
        if need_b:
            db = dy.reshape(-1, dy.shape[-1]).sum(0).to(weight.dtype)
        if need_w:
            dw = _linear_weight_grad(dy, xc, plan, kw, ctx.tokens)
            with _elementwise(weight):
                dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        return dx, dw, db, None, None, None, None


def _linear_weight_grad(dy, xc, plan: Strategy, kw: dict, tokens=None) -> torch.Tensor:
    """Eq. 3 for a Linear: tokens (dim -2) play the conv's positions, split into the prefix and
    patch-grid segments of ``tokens`` (a :class:`fst.tokens.TokenLayout`). Dense for 2-D x,
    unless the rule works per example (``positions_axis`` false: meProp, ReSprop)."""
    rule = plan.rules[2]
    if not rule.prunes or (xc.dim() < 3 and rule.positions_axis):
        segments = [(dy, xc)]
    elif (
        xc.dim() >= 3 and rule.kept_half(plan) is not None
    ):  # the kept half only: even tokens per row
        segments = _fixed_halves(dy, xc, plan, tokens)
    else:
        segments = rule.token_operands(dy, xc, plan, tokens, **kw)
    return sum(d.reshape(-1, d.shape[-1]).T @ t.reshape(-1, t.shape[-1]) for d, t in segments)


def _fixed_halves(dy, xc, plan: Strategy, tokens) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Eq. 3 of the ``fixed`` rule on the kept half only, segment by segment (the same split
    as :meth:`fst.rules.weight_grad.WeightGradRule.token_operands`): per row of the grid, the
    IR-combined dY at even columns against X at even columns."""
    if tokens is None:
        return [_fixed_half(dy, xc, plan.ir_coef, dy.shape[-2])]
    tokens.check(tuple(xc.shape))
    p = tokens.prefix
    segments = [_fixed_half(dy[..., p:, :], xc[..., p:, :], plan.ir_coef, tokens.width)]
    if p:
        dyp, xp = dy[..., :p, :], xc[..., :p, :]
        if plan.prefix_tokens == "include":
            dyp, xp = _fixed_half(dyp, xp, plan.ir_coef, p)
        segments.insert(0, (dyp, xp))
    return segments


def _fixed_half(dy, xc, coef: float, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [..., T, C] viewed as rows [..., T / width, width, C]: the kept half of each row."""
    rows = (dy.shape[-2] // width, width)
    dy = dy.reshape(*dy.shape[:-2], *rows, dy.shape[-1])
    xc = xc.reshape(*xc.shape[:-2], *rows, xc.shape[-1])
    return ir_half(dy, coef, dim=-2), _every_other(xc, xc.dim() - 2, 0)


class NativeBackend(Backend):
    """Dense kernels, masked operands, halved Eq. 3 for the fixed mask."""

    name = "native"

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        return _Conv.apply(x, weight, bias, geom, plan, decay, state)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        return _Linear.apply(x, weight, bias, plan, decay, state, tokens)


BACKENDS.register("native", NativeBackend())
