"""``reference`` backend: the paper's equations, literally, in the im2col domain.

Per sample ``n``: ``X_n = unfold(x_n)`` is (K = Ci*kh*kw, L = Ho*Wo), ``W`` is (Co, K),
``dY_n`` is (Co, L). Eq. 1 ``Y = W' X``; Eq. 2 ``dX = W''^T dY'`` folded back to the input;
Eq. 3 ``dW = sum_n dY_n' X_n'^T`` with the plan's masks on full matrices (F(X^T) keeps the
columns of even width index; IR is Eq. 10's ``dY + dY T`` with a per-row left shift). Slow
and memory-hungry by design: it is the oracle the fast backends are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fst.masks import nm_mask
from fst.ops.base import BACKENDS, Backend, add_decay, autocast_dtype, cast, weight_operands
from fst.ops.released import random4_weight_grad


def shift_left(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[..., i, ...] = t[..., i + 1, ...]`` along ``dim``, zero at the end (Eq. 10's ``dY T``)."""
    out = torch.zeros_like(t)
    n = t.shape[dim]
    if n > 1:
        out.narrow(dim, 0, n - 1).copy_(t.narrow(dim, 1, n - 1))
    return out


def even_mask(n: int, device) -> torch.Tensor:
    """F(X^T) along one axis of length ``n``: True at even (0-based) indices."""
    return torch.arange(n, device=device) % 2 == 0


def eq3_operands(dy, x, plan, width: int | None):
    """Masked ``(dY, X)`` of Eq. 3 along the positions axis (the last dim of both).

    ``dy``: [..., Co, L]; ``x``: [..., K, L]; ``width``: the conv's output width Wo (the
    positions axis is h*Wo + w), or None when positions are tokens (Linear: the row is the
    whole token axis).
    """
    mode = plan.weight_grad
    if mode == "dense":
        return dy, x
    if mode == "fixed" and plan.x_pattern == "random4":
        raise AssertionError("random4 is handled by random4_weight_grad")
    if mode == "nm_dy":
        return dy * nm_mask(dy, dim=-1), x
    if mode == "nm_x":
        return dy, x * nm_mask(x, dim=-1)
    # fixed: F(X^T) keeps even width index; IR adds the right neighbour within the same row.
    L = dy.shape[-1]
    w = width or L
    rows = dy.reshape(*dy.shape[:-1], L // w, w)
    dy = (rows + plan.ir_coef * shift_left(rows, -1)).reshape(dy.shape) if plan.ir_coef else dy
    keep = even_mask(w, x.device).repeat(L // w)
    return dy, x * keep


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geom, plan, decay):
        w_fwd, w_bwd = weight_operands(weight, plan)
        xc, wf, wb, b = cast(autocast_dtype(x), x, w_fwd, w_bwd, bias)
        k = weight.shape[2:]
        cols = F.unfold(xc, k, geom.dilation, geom.padding, geom.stride)  # [N, K, L]
        h, w = x.shape[2:]
        ho = (h + 2 * geom.padding[0] - geom.dilation[0] * (k[0] - 1) - 1) // geom.stride[0] + 1
        wo = (w + 2 * geom.padding[1] - geom.dilation[1] * (k[1] - 1) - 1) // geom.stride[1] + 1
        y = torch.einsum("ok,nkl->nol", wf.flatten(1), cols)
        if b is not None:
            y = y + b[None, :, None]
        ctx.save_for_backward(cols, wb, weight, w_fwd)
        ctx.geom, ctx.plan, ctx.decay, ctx.hw, ctx.wo = geom, plan, decay, (h, w), wo
        ctx.x_dtype = x.dtype
        return y.reshape(x.shape[0], -1, ho, wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        cols, wb, weight, w_fwd = ctx.saved_tensors
        g, plan = ctx.geom, ctx.plan
        dy = dy.to(cols.dtype).flatten(2)  # [N, Co, L]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dyi = dy * nm_mask(dy, dim=1) if plan.input_grad == "nm_dy" else dy
            dcols = torch.einsum("ok,nol->nkl", wb.flatten(1), dyi)
            k = weight.shape[2:]
            dx = F.fold(dcols, ctx.hw, k, g.dilation, g.padding, g.stride).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            if plan.weight_grad == "fixed" and plan.x_pattern == "random4":
                dw = random4_weight_grad(dy, cols, plan.ir_coef).reshape(weight.shape)
            else:
                dyw, xw = eq3_operands(dy, cols, plan, ctx.wo)
                dw = torch.einsum("nol,nkl->ok", dyw, xw).reshape(weight.shape)
            dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        if ctx.needs_input_grad[2]:
            db = dy.sum((0, 2)).to(weight.dtype)
        return dx, dw, db, None, None, None


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, plan, decay):
        w_fwd, w_bwd = weight_operands(weight, plan)
        xc, wf, wb, b = cast(autocast_dtype(x), x, w_fwd, w_bwd, bias)
        y = torch.einsum("oi,...i->...o", wf, xc)
        if b is not None:
            y = y + b
        ctx.save_for_backward(xc, wb, weight, w_fwd)
        ctx.plan, ctx.decay, ctx.x_dtype = plan, decay, x.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xc, wb, weight, w_fwd = ctx.saved_tensors
        plan = ctx.plan
        dy = dy.to(xc.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dyi = dy * nm_mask(dy, dim=-1) if plan.input_grad == "nm_dy" else dy
            dx = torch.einsum("oi,...o->...i", wb, dyi).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            if xc.dim() >= 3:  # matrices with tokens as the positions axis: [B, feat, T]
                dyt = dy.reshape(-1, *dy.shape[-2:]).transpose(1, 2)
                xt = xc.reshape(-1, *xc.shape[-2:]).transpose(1, 2)
                if plan.weight_grad == "fixed" and plan.x_pattern == "random4":
                    dw = random4_weight_grad(dyt, xt, plan.ir_coef)
                else:
                    dyt, xt = eq3_operands(dyt, xt, plan, None)
                    dw = torch.einsum("bot,bit->oi", dyt, xt)
            else:  # no positions axis: Eq. 3 stays dense
                dw = torch.einsum("bo,bi->oi", dy, xc)
            dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        if ctx.needs_input_grad[2]:
            db = dy.reshape(-1, dy.shape[-1]).sum(0).to(weight.dtype)
        return dx, dw, db, None, None


class ReferenceBackend(Backend):
    """Literal im2col implementation of every plan (the test oracle)."""

    name = "reference"

    def conv2d(self, x, weight, bias, geom, plan, decay):
        return _Conv.apply(x, weight, bias, geom, plan, decay)

    def linear(self, x, weight, bias, plan, decay):
        return _Linear.apply(x, weight, bias, plan, decay)


BACKENDS.register("reference", ReferenceBackend())
