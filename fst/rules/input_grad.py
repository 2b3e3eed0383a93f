"""Eq. 2 rules (``Strategy.input_grad``): ``dX = W'^T dY'``, which reduces over Co.

A rule prunes either the weight (``W'``, groups of 4 consecutive output channels for each
(ci, kh, kw) to be 2:4 along Co) or the output gradient (``dY'``, groups along its channel
axis: dim 1 of a conv's dY, the last dim of a Linear's).
"""

from __future__ import annotations

import torch

from fst.masks import apply_mask, nm_mask, nm_mask_of_abs
from fst.rules.base import Rule, register


class InputGradRule(Rule):
    """Gives the Eq. 2 weight and, for dY-side rules, prunes dY."""

    eq = 2
    uses_abs = False
    prunes_weight = False  # the Eq. 2 weight differs from the dense W
    prunes_dy = False  # dY is pruned before Eq. 2
    shares_forward_weight = False  # the Eq. 2 weight is the Eq. 1 weight itself

    def weight(self, w, w_fwd, plan, abs_w=None, state=None) -> torch.Tensor:
        """The matrix whose transpose multiplies dY, shaped like ``w`` (default: dense W)."""
        return w

    def prune_dy(self, dy: torch.Tensor, dim: int, plan=None, state=None) -> torch.Tensor:
        """dY as Eq. 2 sees it; ``dim`` is its channel (Co / out) axis, dim 0 the batch.
        ``plan``: the strategy (options are the rule's own); ``state``: the layer's per-layer
        state (only for layers of stateful plans)."""
        return dy


@register
class Dense(InputGradRule):
    key = "dense"

    def formula(self, plan) -> str:
        return "W^T dY"


@register
class Forward(InputGradRule):
    """The transpose of the forward weight: the chain rule of ``Y = W' X`` (SR-STE, TSM).

    ``S(W)^T`` is sparse but its groups run along K, not Co, so it is not 2:4 along Eq. 2's
    reduction dimension and gains nothing on sparse tensor cores (the FST paper's point about
    SR-STE); only a transposable ``T(W)`` is 2:4 both ways.
    """

    key = "fwd"
    operand = "W^T"
    prunes_weight = True
    shares_forward_weight = True

    def formula(self, plan) -> str:
        eq1 = plan.rules[0]
        w = eq1.formula(plan).removesuffix(" X")
        return f"{w}^T dY"

    def tensor_core(self, plan) -> bool:
        return plan.rules[0].transposable

    def pattern(self, plan) -> str:
        return f"Eq. 1's {plan.rules[0].pattern(plan)} mask, transposed"

    def weight(self, w, w_fwd, plan, abs_w=None, state=None):
        return w_fwd


@register
class NMWT(InputGradRule):
    """``S(W^T)``: 2:4 along Co, from the dense W (FST, Sec. 4.1)."""

    key = "nm_wt"
    operand = "W^T"
    prunes_weight = True
    uses_abs = True

    def formula(self, plan) -> str:
        return "S(W^T) dY"

    def tensor_core(self, plan) -> bool:
        return True

    def weight(self, w, w_fwd, plan, abs_w=None, state=None):
        a = w.abs() if abs_w is None else abs_w
        return apply_mask(w, nm_mask_of_abs(a.reshape(w.shape[0], -1), dim=0).view(w.shape))


@register
class NMdY(InputGradRule):
    """``S(dY)`` along Co with the dense W (Table 1's GG/GX)."""

    key = "nm_dy"
    operand = "dY"
    prunes_dy = True

    def formula(self, plan) -> str:
        return "W^T S(dY)"

    def tensor_core(self, plan) -> bool:
        return True

    def prune_dy(self, dy, dim, plan=None, state=None):
        return apply_mask(dy, nm_mask(dy, dim=dim))
