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
from fst.rules.base import Rule, option, register


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
    uses_abs = True
    mask_layout: str = option(
        "im2col",
        "'im2col' (paper: S(W) along Ci*kh*kw) or 'cin' (along Ci per kernel position)",
        choices=("im2col", "cin"),
    )

    def formula(self, plan) -> str:
        return "S(W) X"

    def tensor_core(self, plan) -> bool:
        return True

    def mask(self, w, plan, abs_w=None, state=None):
        a = w.abs() if abs_w is None else abs_w
        if self.mask_layout == "cin" and w.dim() == 4:
            return nm_mask_of_abs(a, dim=1)
        return nm_mask_of_abs(a.reshape(w.shape[0], -1), dim=1).view(w.shape)

    def reduction_view(self, w_fwd, plan):
        if self.mask_layout == "cin" and w_fwd.dim() == 4:
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


def held_mask(state, rule: str):
    """The keep-mask a sparsifier holds in a layer's state (``state["mask"]``; None: not set)."""
    if state is None or "mask" not in state:
        raise RuntimeError(
            f"the Eq. 1 rule {rule!r} multiplies W by the mask its sparsifier holds, but this "
            "layer has none: build the strategy's sparsifier once the model is sparsified "
            "(fst.build_sparsifier(model, optimizer, total_steps=..., steps_per_epoch=...)) and "
            "call its step() after every optimizer.step() (train.py does both)"
        )
    return state["mask"]


@register
class Held(ForwardRule):
    """``M(W)``: an unstructured keep-mask of W held in the layer's state by the plan's
    sparsifier (DPF's magnitude mask, RigL's drop/grow mask; :mod:`fst.sparsifier`).

    Unstructured, so not 2:4 along K: no sparse tensor core runs it and Figure 2 counts the
    GEMM dense.
    """

    key = "held"
    operand = "W"
    state_keys = ("mask",)

    def formula(self, plan) -> str:
        return "M(W) X"

    def pattern(self, plan) -> str:
        return "unstructured"

    def mask(self, w, plan, abs_w=None, state=None):
        return held_mask(state, self.key)


@register
class HeldNM(NM):
    """``S_fix(W)``: a 2:4 mask computed once (ASP's one-shot magnitude prune, by the ``nm``
    rule's arithmetic and ``mask_layout``) and then held in the layer's state. Until its
    sparsifier sets it (``state["mask"]`` None: ASP's dense phase) the forward weight is W.
    """

    key = "held_nm"
    uses_abs = False
    state_keys = ("mask",)

    def formula(self, plan) -> str:
        return "S_fix(W) X"

    def skips(self, plan, weight_shape) -> str:
        # apex ASP's eligible_modules: dims 0 and 1 of the weight (Co x Ci, out x in) must be
        # multiples of 8 and 16 for a sparse tensor core; other layers stay dense.
        if weight_shape[0] % 8 or weight_shape[1] % 16:
            return f"{weight_shape[0]}x{weight_shape[1]} is not a multiple of 8x16 (apex ASP)"
        return ""

    def mask(self, w, plan, abs_w=None, state=None):
        return held_mask(state, self.key)

    def one_shot_mask(self, w: torch.Tensor, plan) -> torch.Tensor:
        """The mask its sparsifier computes once and then holds: ``nm``'s S(W) of ``w`` with
        this rule's ``mask_layout``."""
        return NM.mask(self, w, plan)

    def pruning_now(self, state) -> bool:
        return state is not None and state.get("mask") is not None


@register
class SoftFilters(ForwardRule):
    """Soft filter pruning (SFP / ASFP, He et al.): the plan's sparsifier zeroes the filters of
    W with the smallest L2 norm *in W itself* at the end of every epoch, and they keep training
    in between, so the forward multiplies W as it is (no mask here). The pruned operand is W
    with whole filters (output channels) zero: channel sparsity, not 2:4.
    """

    key = "soft_filters"
    operand = "W"

    def formula(self, plan) -> str:
        return "SFP(W) X"

    def pattern(self, plan) -> str:
        return "filters (L2), zeroed each epoch"
