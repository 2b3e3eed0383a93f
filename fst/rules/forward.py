"""Eq. 1 rules (``Strategy.forward``): the forward weight ``W`` of ``Y = W X``.

Eq. 1 reduces over K = Ci*kh*kw (Linear: ``in``), so a 2:4 forward weight has its groups of
4 along K: 4 consecutive entries of each filter's flattened (Ci, kh, kw) in PyTorch's im2col
order, zero-padded when K % 4 != 0 (``mask_layout="im2col"``, the paper), or 4 consecutive
input channels at each kernel position (``mask_layout="cin"``: SR-STE's later release and what
a channels-last sparse kernel over kernel positions needs). Both are 2:4 along K.
"""

from __future__ import annotations

import torch

from fst.masks import nm_mask_of_abs, transposable_mask
from fst.rules.base import Rule, register


class ForwardRule(Rule):
    """Computes the Eq. 1 keep-mask of ``W`` (Co, Ci, kh, kw) or (out, in)."""

    eq = 1
    uses_abs = False  # ranks |W| (lets Eq. 2 share one |W| pass)
    transposable = False  # the pruned W is 2:4 along Co too, so its transpose serves Eq. 2

    def mask(self, w: torch.Tensor, plan, abs_w: torch.Tensor | None = None, state=None):
        """Bool keep-mask shaped like ``w``, or None for a dense forward weight. ``state``: the
        layer's per-layer state (only for layers of stateful plans)."""
        return None

    def pruning_now(self, state) -> bool:
        """Whether the forward weight is pruned at this point of training (False: a mask that
        a sparsifier has not set yet, as in ASP's dense phase)."""
        return True

    def reduction_view(self, w_fwd: torch.Tensor, plan) -> tuple[torch.Tensor, int, str]:
        """``(tensor, dim, name)``: ``w_fwd`` viewed so 2:4 groups run along ``dim``."""
        if w_fwd.dim() == 4:
            return w_fwd.reshape(w_fwd.shape[0], -1), 1, "Ci*kh*kw"
        return w_fwd, 1, "in"


@register
class Dense(ForwardRule):
    key = "dense"

    def formula(self, plan) -> str:
        return "W X"


@register
class NM(ForwardRule):
    """``S(W)``: the 2 largest ``|w|`` of every 4 along K (see the module docstring)."""

    key = "nm"
    operand = "W"
    options = ("mask_layout",)
    uses_abs = True

    def formula(self, plan) -> str:
        return "S(W) X"

    def tensor_core(self, plan) -> bool:
        return True

    def mask(self, w, plan, abs_w=None, state=None):
        a = w.abs() if abs_w is None else abs_w
        if plan.mask_layout == "cin" and w.dim() == 4:
            return nm_mask_of_abs(a, dim=1)
        return nm_mask_of_abs(a.reshape(w.shape[0], -1), dim=1).view(w.shape)

    def reduction_view(self, w_fwd, plan):
        if plan.mask_layout == "cin" and w_fwd.dim() == 4:
            return w_fwd, 1, "Ci"
        return super().reduction_view(w_fwd, plan)


@register
class TSM(ForwardRule):
    """``T(W)``: exact transposable 2:4 mask of (Co, K) (Hubara et al. 2021); 2:4 along both
    K (Eq. 1) and Co (so ``T(W)^T`` serves Eq. 2)."""

    key = "tsm"
    operand = "W"
    transposable = True

    def formula(self, plan) -> str:
        return "T(W) X"

    def tensor_core(self, plan) -> bool:
        return True

    def mask(self, w, plan, abs_w=None, state=None):
        return transposable_mask(w.reshape(w.shape[0], -1)).view(w.shape)
