"""Eq. 3, the weight gradient ``dW = dY' X'^T``, as the fast backends run it (``native``,
``sparse24``): the plan's Eq. 3 rule's operands, or the rule's own fast path where it offers
one (:meth:`fst.rules.base.Rule.kept_half`):

- the kept half only (``fst``/``fst_noir``'s ``fixed`` rule): with F(X^T) keeping even output
  columns, ``sum_{w even} dY'(h, w) X(h, w)^T`` is exactly the dense weight gradient of the
  same conv with width stride ``2 * s_w`` over the IR-combined half ``dY'(h, w) = dY(h, w) +
  c * dY(h, w + 1)`` (w even): half of Eq. 3's work on every device. For Linear the kept half
  is every even token of each row: the whole token axis, or the rows of a vision
  transformer's patch grid (:mod:`fst.tokens`);
- a token Linear's kept half on CUDA as one Triton GEMM (:func:`fused_linear_weight_grad`,
  :mod:`fst.ops.eq3_triton`), which ``sparse24`` runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fst.ops import eq3_triton
from fst.ops.base import ConvGeometry, elementwise
from fst.strategies import Strategy

conv_bwd = torch.ops.aten.convolution_backward.default


def _every_other(t: torch.Tensor, dim: int, start: int) -> torch.Tensor:
    idx = [slice(None)] * t.dim()
    idx[dim] = slice(start, None, 2)
    return t[tuple(idx)]


def ir_half(dy: torch.Tensor, coef: float, dim: int) -> torch.Tensor:
    """The IR-combined kept half along ``dim``: ``dy[2i] + coef * dy[2i + 1]`` (0 past the end).

    One fused pass over ``dy`` (Eq. 10's shift and add restricted to the columns F keeps). An
    odd length's last kept column has no right neighbour: the odd columns get one zero column
    (plain ops, no ``out=`` into a strided view, so ``torch.compile`` traces it whole). Eager
    CPU: on as few threads as its size merits (:func:`fst.ops.base.elementwise`).
    """
    dim = dim % dy.dim()
    n = dy.shape[dim]
    even = _every_other(dy, dim, 0)
    with elementwise(dy):
        if not coef or n < 2:
            return even.contiguous()
        odd = _every_other(dy, dim, 1)
        if n % 2:
            odd = F.pad(odd, [0, 0] * (dy.dim() - 1 - dim) + [0, 1])
        return torch.add(even, odd, alpha=coef)


def conv_weight_grad(dy, xc, wb, g: ConvGeometry, plan: Strategy, kw: dict) -> torch.Tensor:
    """Eq. 3 for a conv: ``dW = dY' X'^T`` with the plan's Eq. 3 rule (``kw``: the layer's
    state for stateful plans, :func:`fst.rules.with_state`)."""
    rule = plan.rules[2]
    coef = rule.kept_half(plan)
    if coef is not None:
        stride = (g.stride[0], 2 * g.stride[1])
        args = (stride, g.padding, g.dilation, False, [0, 0], 1)
        return conv_bwd(ir_half(dy, coef, dim=3), xc, wb, None, *args, [False, True, False])[1]
    wo = dy.shape[3]
    if rule.prunes_x:  # X itself is masked: im2col [N, K, L], one column per output position
        cols = F.unfold(xc, wb.shape[2:], g.dilation, g.padding, g.stride)
        dyf, cols = rule.operands(dy.flatten(2), cols, plan, dim=-1, width=wo, **kw)
        return torch.einsum("nol,nkl->ok", dyf, cols).reshape(wb.shape)
    dyf, _ = rule.operands(dy.flatten(2), None, plan, dim=-1, width=wo, **kw)
    args = (g.stride, g.padding, g.dilation, False, [0, 0], 1)
    return conv_bwd(dyf.view_as(dy), xc, wb, None, *args, [False, True, False])[1]


def linear_weight_grad(dy, xc, plan: Strategy, kw: dict, tokens=None) -> torch.Tensor:
    """Eq. 3 for a Linear: tokens (dim -2) play the conv's positions, split into the prefix and
    patch-grid segments of ``tokens`` (a :class:`fst.tokens.TokenLayout`). Dense for 2-D x,
    unless the rule works per example (``positions_axis`` false: meProp, ReSprop)."""
    rule = plan.rules[2]
    coef = rule.kept_half(plan)
    if not rule.prunes or (xc.dim() < 3 and rule.positions_axis):
        segments = [(dy, xc)]
    elif xc.dim() >= 3 and coef is not None:  # the kept half only: even tokens per row
        segments = _kept_halves(dy, xc, coef, plan, tokens)
    else:
        segments = rule.token_operands(dy, xc, plan, tokens, **kw)
    return sum(d.reshape(-1, d.shape[-1]).T @ t.reshape(-1, t.shape[-1]) for d, t in segments)


def _kept_halves(dy, xc, coef: float, plan: Strategy, tokens) -> list[tuple]:
    """Eq. 3 on the kept half only, segment by segment (the same split as
    :meth:`fst.rules.weight_grad.WeightGradRule.token_operands`): per row of the grid, the
    IR-combined dY at even columns against X at even columns."""
    if tokens is None:
        return [_kept_half(dy, xc, coef, dy.shape[-2])]
    tokens.check(tuple(xc.shape))
    p = tokens.prefix
    segments = [_kept_half(dy[..., p:, :], xc[..., p:, :], coef, tokens.width)]
    if p:
        dyp, xp = dy[..., :p, :], xc[..., :p, :]
        if plan.rules[2].prefix_tokens == "include":  # the Eq. 3 rule owns the option
            dyp, xp = _kept_half(dyp, xp, coef, p)
        segments.insert(0, (dyp, xp))
    return segments


def _kept_half(dy, xc, coef: float, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [..., T, C] viewed as rows [..., T / width, width, C]: the kept half of each row."""
    rows = (dy.shape[-2] // width, width)
    dy = dy.reshape(*dy.shape[:-2], *rows, dy.shape[-1])
    xc = xc.reshape(*xc.shape[:-2], *rows, xc.shape[-1])
    return ir_half(dy, coef, dim=-2), _every_other(xc, xc.dim() - 2, 0)


def fuses(plan: Strategy, x: torch.Tensor) -> bool:
    """Whether :func:`fused_linear_weight_grad` can run a token Linear's Eq. 3 for input ``x``:
    the rule offers its kept half, ``x`` has tokens and Triton runs on its device."""
    return plan.rules[2].kept_half(plan) is not None and x.dim() >= 3 and eq3_triton.available(x)


def fused_linear_weight_grad(dy, xc, plan: Strategy, tokens=None) -> torch.Tensor | None:
    """Eq. 3 of a token Linear's kept half as one Triton GEMM (:mod:`fst.ops.eq3_triton`),
    float32; None where it does not apply (:func:`fuses`, or a dtype other than bf16, fp16 or
    fp32): the caller runs :func:`linear_weight_grad`."""
    if not fuses(plan, xc) or xc.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return None
    coef = plan.rules[2].kept_half(plan)
    return eq3_triton.fixed_weight_grad(dy, xc, coef, tokens, plan.rules[2].prefix_tokens)
