"""The one autograd skeleton of every backend's sparse layer: :class:`LayerFunction`.

Forward: the plan's weights of Eq. 1 and 2 (masked once), cast to the autocast dtype, Eq. 1
with autocast off, the operands saved. Backward: dY in the compute dtype, Eq. 2 and 3, the
bias gradient, then the SR-STE decay and the input dtypes. The arithmetic is a
:class:`Kernels` pair of plain functions per backend and layer type. ``torch.compile`` traces
the Function whole (forward and ``once_differentiable`` backward, no graph break).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from fst.ops.base import add_decay, autocast_dtype, cast, elementwise
from fst.rules import weight_operands, with_state
from fst.strategies import Strategy


class Kernels(NamedTuple):
    """One backend's arithmetic for one layer type (``args``: its per-call argument).

    ``eq1(xc, wf, b, weight, args) -> (y, saved)``: Eq. 1 on the cast operands and the tensor
    backward needs (``weight``: the parameter). ``grads(dy, saved, wb, weight, plan, kw, args,
    x_shape, need) -> (dx, dw, db)``: Eq. 2 and 3, each None unless ``need`` (x, w, b) asks;
    ``db`` None: the sum of dY (else the kernel's, e.g. from one fused call); ``kw``: the
    layer's rule state (:func:`fst.rules.with_state`).
    """

    eq1: Callable
    grads: Callable


def masked_weights(weight: torch.Tensor, plan: Strategy, need_bwd: bool = True, state=None):
    """:func:`fst.rules.weight_operands` as the layers run it (see :func:`~base.elementwise`)."""
    with elementwise(weight):
        return weight_operands(weight, plan, need_bwd, state)


class LayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: Kernels, x, weight, bias, plan: Strategy, decay: float, state, args):
        w_fwd, w_bwd = masked_weights(weight, plan, ctx.needs_input_grad[1], state)
        xc, wf, wb, b = cast(autocast_dtype(x), x, w_fwd, w_bwd, bias)
        with torch.autocast(x.device.type, enabled=False):
            y, saved = k.eq1(xc, wf, b, weight, args)
        # no Eq. 2 to run (wb None): a conv's weight-gradient call still needs a weight shape
        ctx.save_for_backward(saved, wf if wb is None else wb, weight, w_fwd)
        ctx.k, ctx.plan, ctx.decay, ctx.kw, ctx.args = k, plan, decay, with_state(state), args
        ctx.x_dtype, ctx.x_shape = x.dtype, x.shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        saved, wb, weight, w_fwd = ctx.saved_tensors
        need, plan = ctx.needs_input_grad[1:4], ctx.plan
        dy = dy.to(saved.dtype)
        dx, dw, db = ctx.k.grads(dy, saved, wb, weight, plan, ctx.kw, ctx.args, ctx.x_shape, need)
        if need[2] and db is None:  # dY summed over all but its channels (conv: dim 1)
            db = dy.sum((0, 2, 3)) if weight.dim() == 4 else dy.reshape(-1, dy.shape[-1]).sum(0)
        if dw is not None:
            with elementwise(weight):
                dw = add_decay(dw.to(weight.dtype), weight, w_fwd, plan, ctx.decay)
        dx = None if dx is None else dx.to(ctx.x_dtype)
        db = None if db is None else db.to(weight.dtype)
        return None, dx, dw, db, None, None, None, None
