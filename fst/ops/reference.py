"""``reference`` backend: the paper's equations, literally, in the im2col domain.

Per sample ``n``: ``X_n = unfold(x_n)`` is (K = Ci*kh*kw, L = Ho*Wo), ``W`` is (Co, K),
``dY_n`` is (Co, L). Eq. 1 ``Y = W' X``; Eq. 2 ``dX = W''^T dY'`` folded back to the input;
Eq. 3 ``dW = sum_n dY_n' X_n'^T`` with the masks of the plan's Eq. 3 rule on full matrices
(Linear: over tokens, split by the layer's token layout into prefix and patch-grid segments).
Every mask is the plan's rules' own (:mod:`fst.rules`), applied to whole matrices. Slow and
memory-hungry by design: it is the oracle the fast backends are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fst.ops.base import BACKENDS, Backend, add_decay, autocast_dtype, cast
from fst.rules import weight_operands, with_state


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geom, plan, decay, state):
        w_fwd, w_bwd = weight_operands(weight, plan, state=state)
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
        ctx.kw = with_state(state)
        ctx.x_dtype = x.dtype
        # einsum's output is channel-major; a contiguous output keeps the layers after it
        # (batch norm) on the same strides in eager and under torch.compile's fake tensors
        return y.reshape(x.shape[0], -1, ho, wo).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        cols, wb, weight, w_fwd = ctx.saved_tensors
        g, plan = ctx.geom, ctx.plan
        dy = dy.to(cols.dtype).flatten(2)  # [N, Co, L]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dyi = plan.rules[1].prune_dy(dy, 1, plan, **ctx.kw)
            dcols = torch.einsum("ok,nol->nkl", wb.flatten(1), dyi)
            k = weight.shape[2:]
            dx = F.fold(dcols, ctx.hw, k, g.dilation, g.padding, g.stride).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dyw, xw = plan.rules[2].operands(dy, cols, plan, dim=-1, width=ctx.wo, **ctx.kw)
            dw = torch.einsum("nol,nkl->ok", dyw, xw).reshape(weight.shape)
            dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        if ctx.needs_input_grad[2]:
            db = dy.sum((0, 2)).to(weight.dtype)
        return dx, dw, db, None, None, None, None


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, plan, decay, state, tokens=None):
        w_fwd, w_bwd = weight_operands(weight, plan, state=state)
        xc, wf, wb, b = cast(autocast_dtype(x), x, w_fwd, w_bwd, bias)
        y = torch.einsum("oi,...i->...o", wf, xc)
        if b is not None:
            y = y + b
        ctx.save_for_backward(xc, wb, weight, w_fwd)
        ctx.plan, ctx.decay, ctx.x_dtype = plan, decay, x.dtype
        ctx.kw, ctx.tokens = with_state(state), tokens
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xc, wb, weight, w_fwd = ctx.saved_tensors
        plan = ctx.plan
        dy = dy.to(xc.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dyi = plan.rules[1].prune_dy(dy, -1, plan, **ctx.kw)
            dx = torch.einsum("oi,...o->...i", wb, dyi).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            eq3 = plan.rules[2]
            # tokens (dim -2) are the positions axis of Eq. 3; per-example rules need none
            if xc.dim() >= 3 or not eq3.positions_axis:
                segments = eq3.token_operands(dy, xc, plan, ctx.tokens, **ctx.kw)
                dw = sum(torch.einsum("...to,...ti->oi", d, t) for d, t in segments)
            else:  # no positions axis: Eq. 3 stays dense
                dw = torch.einsum("bo,bi->oi", dy, xc)
            dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        if ctx.needs_input_grad[2]:
            db = dy.reshape(-1, dy.shape[-1]).sum(0).to(weight.dtype)
        return dx, dw, db, None, None, None, None


class ReferenceBackend(Backend):
    """Literal im2col implementation of every plan (the test oracle)."""

    name = "reference"

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        return _Conv.apply(x, weight, bias, geom, plan, decay, state)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        return _Linear.apply(x, weight, bias, plan, decay, state, tokens)


BACKENDS.register("reference", ReferenceBackend())
