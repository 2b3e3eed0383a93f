"""``native`` backend: every strategy with the fastest dense kernels of the device.

- Eq. 1: ``F.conv2d`` / ``F.linear`` with the masked weight.
- Eq. 2: the input-gradient convolution (``aten.convolution_backward``) with the Eq. 2
  rule's weight (dense W, the forward weight, S(W^T), ...) and its dY (S(dY) for ``gg``/``gx``).
- Eq. 3: the rule's operands (:mod:`fst.ops.eq3`): a masked dY goes through the
  weight-gradient convolution, a masked X through im2col; ``fst``/``fst_noir`` compute only
  the kept half (the ``fixed`` rule's fast path, tested against the rule).
- Masks of W and W^T are computed once per forward and saved for backward.
- Eager CPU: the element-wise work (masks, SR-STE decay, IR half) runs on as few threads as its
  size merits (:mod:`fst.threads`), so its cost does not depend on the machine's load. Under
  ``torch.compile`` the layer's Function is traced whole (forward and backward, no graph break)
  and inductor fuses that work into a few kernels (:mod:`fst.compile`).
"""

from __future__ import annotations

import torch.nn.functional as F

from fst.ops.base import BACKENDS, Backend
from fst.ops.eq3 import conv_bwd, conv_weight_grad, ir_half, linear_weight_grad
from fst.ops.function import Kernels, LayerFunction, masked_weights

__all__ = ["CONV", "LINEAR", "NativeBackend", "ir_half", "masked_weights"]


def _conv_eq1(xc, wf, b, weight, g):
    return F.conv2d(xc, wf, b, g.stride, g.padding, g.dilation), xc


def _conv_grads(dy, xc, wb, weight, plan, kw, g, x_shape, need):
    need_x, need_w, need_b = need
    args = (g.stride, g.padding, g.dilation, False, [0, 0], 1)
    eq2, eq3 = plan.rules[1], plan.rules[2]
    # One call serves Eq. 2 and 3 when both use the plain dY (the common case).
    if not eq2.prunes_dy and not eq3.prunes:
        bias_sizes = [weight.shape[0]] if need_b else None
        return conv_bwd(dy, xc, wb, bias_sizes, *args, [need_x, need_w, need_b])
    dx = dw = None
    if need_x:
        dyi = eq2.prune_dy(dy, 1, plan, **kw)
        dx = conv_bwd(dyi, xc, wb, None, *args, [True, False, False])[0]
    if need_w:
        dw = conv_weight_grad(dy, xc, wb, g, plan, kw)
    return dx, dw, None


def _linear_eq1(xc, wf, b, weight, tokens):
    return F.linear(xc, wf, b), xc


def _linear_grads(dy, xc, wb, weight, plan, kw, tokens, x_shape, need):
    dx = plan.rules[1].prune_dy(dy, -1, plan, **kw) @ wb if need[0] else None
    return dx, linear_weight_grad(dy, xc, plan, kw, tokens) if need[1] else None, None


CONV = Kernels(_conv_eq1, _conv_grads)
LINEAR = Kernels(_linear_eq1, _linear_grads)


class NativeBackend(Backend):
    """Dense kernels, masked operands, halved Eq. 3 for the fixed mask."""

    name = "native"

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        return LayerFunction.apply(CONV, x, weight, bias, plan, decay, state, geom)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        return LayerFunction.apply(LINEAR, x, weight, bias, plan, decay, state, tokens)


BACKENDS.register("native", NativeBackend())
