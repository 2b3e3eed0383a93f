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

from fst.ops.base import BACKENDS, Backend
from fst.ops.function import Kernels, LayerFunction


def _conv_eq1(xc, wf, b, weight, g):
    cols = F.unfold(xc, wf.shape[2:], g.dilation, g.padding, g.stride)  # [N, K, L]
    ho, wo = g.out_hw(*xc.shape[2:], wf.shape[2:])
    y = torch.einsum("ok,nkl->nol", wf.flatten(1), cols)
    if b is not None:
        y = y + b[None, :, None]
    # einsum's output is channel-major; a contiguous output keeps the layers after it
    # (batch norm) on the same strides in eager and under torch.compile's fake tensors
    return y.reshape(xc.shape[0], -1, ho, wo).contiguous(), cols


def _conv_grads(dy, cols, wb, weight, plan, kw, g, x_shape, need):
    wo = dy.shape[3]
    dy = dy.flatten(2)  # [N, Co, L]
    dx = dw = None
    if need[0]:
        dcols = torch.einsum(
            "ok,nol->nkl", wb.flatten(1), plan.rules[1].prune_dy(dy, 1, plan, **kw)
        )
        dx = F.fold(dcols, x_shape[2:], wb.shape[2:], g.dilation, g.padding, g.stride)
    if need[1]:
        dyw, xw = plan.rules[2].operands(dy, cols, plan, dim=-1, width=wo, **kw)
        dw = torch.einsum("nol,nkl->ok", dyw, xw).reshape(wb.shape)
    return dx, dw, None


def _linear_eq1(xc, wf, b, weight, tokens):
    y = torch.einsum("oi,...i->...o", wf, xc)
    return (y if b is None else y + b), xc


def _linear_grads(dy, xc, wb, weight, plan, kw, tokens, x_shape, need):
    dx = dw = None
    if need[0]:
        dx = torch.einsum("oi,...o->...i", wb, plan.rules[1].prune_dy(dy, -1, plan, **kw))
    if need[1]:
        eq3 = plan.rules[2]
        # tokens (dim -2) are the positions axis of Eq. 3; per-example rules need none
        if xc.dim() >= 3 or not eq3.positions_axis:
            segments = eq3.token_operands(dy, xc, plan, tokens, **kw)
            dw = sum(torch.einsum("...to,...ti->oi", d, t) for d, t in segments)
        else:  # no positions axis: Eq. 3 stays dense
            dw = torch.einsum("bo,bi->oi", dy, xc)
    return dx, dw, None


CONV = Kernels(_conv_eq1, _conv_grads)
LINEAR = Kernels(_linear_eq1, _linear_grads)


class ReferenceBackend(Backend):
    """Literal im2col implementation of every plan (the test oracle)."""

    name = "reference"

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        return LayerFunction.apply(CONV, x, weight, bias, plan, decay, state, geom)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        return LayerFunction.apply(LINEAR, x, weight, bias, plan, decay, state, tokens)


BACKENDS.register("reference", ReferenceBackend())
