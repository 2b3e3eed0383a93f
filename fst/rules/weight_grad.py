"""Eq. 3 rules (``Strategy.weight_grad``): ``dW = dY' X'^T``, which reduces over positions.

The positions axis is the output positions of a conv (per sample, flattened ``h * Wo + w``;
the GEMM reduces over N*H*W) or the token axis of a Linear whose input has 3 or more dims (the
tokens of one sequence form one row). A 2-D Linear input has no positions axis: Eq. 3 stays
dense there (the backends decide that, not the rules).

:meth:`WeightGradRule.operands` is each rule's whole arithmetic, in that domain: ``dy`` and
``x`` share the positions axis ``dim`` (conv: ``dy`` [N, Co, L], ``x`` the im2col matrix
[N, K, L], ``dim=-1``; Linear: ``dy`` [..., T, out], ``x`` [..., T, in], ``dim=-2``) and
``width`` is the row length along it (conv: Wo; None: the whole axis is one row).

A Linear inside a vision transformer has a :class:`fst.tokens.TokenLayout` (prefix tokens,
then a patch grid in raster order): :meth:`WeightGradRule.token_operands` splits its token
axis into the prefix segment and the patch segment (rows of the grid's width), so no rule
pairs a class token with a patch or a patch with the next grid row.
"""

from __future__ import annotations

import torch

from fst.masks import apply_mask, nm_mask
from fst.rules.base import Rule, option, register


def _along(v: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """View the 1-D ``v`` so it broadcasts along ``dim`` of an ``ndim``-dim tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return v.view(shape)


class WeightGradRule(Rule):
    """Prunes dY and/or X^T of Eq. 3 along the positions axis (or, with ``positions_axis``
    false, per example: meProp, ReSprop)."""

    eq = 3
    prunes_x = False  # needs X itself (a conv backend must build the im2col matrix)
    # Prunes along the positions axis: a 2-D Linear input has none, so Eq. 3 stays dense there.
    # False: the rule works per example (dim 0), 2-D Linear inputs (an MLP's) included.
    positions_axis = True
    # Every Eq. 3 rule splits a ViT's token axis the same way (token_operands), so the option
    # is declared once here; only rules that prune along positions read it (``options``).
    prefix_tokens: str = option(
        "dense",
        "Eq. 3 of a vision transformer's Linear layers: 'dense' (class, register and "
        "distillation tokens' dY X^T unpruned) or 'include' (they form one more row, pruned by "
        "the Eq. 3 rule)",
        choices=("dense", "include"),
    )

    @property
    def options(self) -> tuple[str, ...]:
        opts = super().options
        if self.prunes and self.positions_axis:  # Eq. 3 split by token layout (ViT layers)
            return opts
        return tuple(o for o in opts if o != "prefix_tokens")

    def operands(self, dy, x, plan, dim: int = -1, width: int | None = None, state=None):
        """``(dY', X')``: the operands of Eq. 3 (``x`` may be None for rules with
        ``prunes_x=False``). The reference semantics every backend is tested against.
        ``state``: the layer's per-layer state (only for layers of stateful plans)."""
        return dy, x

    def token_operands(
        self, dy, x, plan, tokens=None, **kw
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Eq. 3 of a Linear over its token axis (dim -2), as segments ``[(dY', X'), ...]``.

        ``dy`` [..., T, out], ``x`` [..., T, in]; ``dW = sum_seg dY'^T X'`` over the flattened
        leading dims and tokens. ``tokens`` None: one segment, the whole axis one row. With a
        :class:`fst.tokens.TokenLayout`: the patch tokens ``[prefix:]`` with rows of the
        grid's width, and before them the prefix tokens ``[:prefix]``, unpruned
        (``prefix_tokens="dense"``) or pruned by this rule as one more row of their own
        (``"include"``). ``kw``: the layer's ``state`` for stateful plans.
        """
        if tokens is None or not self.positions_axis:  # per-example rules see all tokens
            return [self.operands(dy, x, plan, dim=-2, **kw)]
        tokens.check(tuple(x.shape))
        p = tokens.prefix
        patches = self.operands(
            dy[..., p:, :], x[..., p:, :], plan, dim=-2, width=tokens.width, **kw
        )
        if not p:
            return [patches]
        dyp, xp = dy[..., :p, :], x[..., :p, :]
        if self.prefix_tokens == "include":
            dyp, xp = self.operands(dyp, xp, plan, dim=-2, **kw)
        return [(dyp, xp), patches]

    def note(self, plan, width: int) -> str:
        """Per-layer remark for :func:`fst.summary`, given the row length (conv: Wo)."""
        return ""


@register
class Dense(WeightGradRule):
    key = "dense"

    def formula(self, plan) -> str:
        return "dY X^T"


@register
class Fixed(WeightGradRule):
    """FST's fixed mask F(X^T) with Information Restoration (Eq. 7-10).

    F keeps the positions of even width index (0-based) in every row. IR adds
    ``ir_coef * dY(h, w + 1)`` onto ``dY(h, w)`` wherever a right neighbour exists in the same
    row (Eq. 10's ``dY + dY T``; ``ir_coef`` 1.0 in the paper, 0 = ``fst_noir``). Only the kept
    positions contribute, so a backend may compute the kept half alone (see ``fst.ops.native``).
    """

    key = "fixed"
    operand = "X^T"
    prunes_x = True
    ir_coef: float = option(
        0.0, "coefficient of the shifted gradient in IR (paper 1.0 = fst, 0 = no IR = fst_noir)"
    )

    def formula(self, plan) -> str:
        if self.ir_coef:
            return f"(dY + {self.ir_coef:g}*shift(dY)) F(X^T)"
        return "dY F(X^T)"

    def tensor_core(self, plan) -> bool:
        return True  # 2:4 along the flattened positions when Wo is even (see note())

    def kept_half(self, plan) -> float | None:
        return float(self.ir_coef)

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        dim = dim % dy.dim()
        n = dy.shape[dim]
        w = width or n
        col = torch.arange(n, device=dy.device) % w  # width index of every position
        if self.ir_coef:
            right = torch.zeros_like(dy)
            if n > 1:
                right.narrow(dim, 0, n - 1).copy_(dy.narrow(dim, 1, n - 1))
            has_right = _along((col < w - 1).to(dy.dtype), dim, dy.dim())
            dy = dy + self.ir_coef * right * has_right
        if x is not None:
            x = x * _along((col % 2 == 0).to(x.dtype), dim, x.dim())
        return dy, x

    def note(self, plan, width):
        if width % 2:
            return f"Wo={width}: F(X^T) not 2:4 along flat H*W"
        return f"Wo={width}"


@register
class NMdY(WeightGradRule):
    """``S(dY)``: 2:4 over groups of 4 consecutive positions (Table 1's WG/GG)."""

    key = "nm_dy"
    operand = "dY"

    def formula(self, plan) -> str:
        return "S(dY) X^T"

    def tensor_core(self, plan) -> bool:
        return True

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        return apply_mask(dy, nm_mask(dy, dim=dim)), x


@register
class NMX(WeightGradRule):
    """``S(X^T)``: 2:4 over groups of 4 consecutive positions of X (Table 1's WX/GX)."""

    key = "nm_x"
    operand = "X^T"
    prunes_x = True

    def formula(self, plan) -> str:
        return "dY S(X^T)"

    def tensor_core(self, plan) -> bool:
        return True

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        return dy, apply_mask(x, nm_mask(x, dim=dim))
