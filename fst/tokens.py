"""Token layouts: where the patch grid lies on a transformer's token axis (the Linear analogue
of a conv's output H x W for Eq. 3).

A Linear layer inside a vision transformer sees ``x`` of shape ``[B, T, C]`` with ``T = prefix
+ rows * cols``: first ``prefix`` tokens that are no image position (class token, register
tokens, DeiT's distillation token), then one token per patch in raster order (row-major over
the patch grid, as ``PatchEmbed`` flattens it). Eq. 3 (``dW = dY X^T``) reduces over tokens,
and FST's fixed mask needs each token's grid column: F keeps even columns and IR adds the
right neighbour *in the same grid row* (the paper's spatial neighbour, Eq. 7-10), never a
token of the next row or a prefix token.

:class:`TokenLayout` says this for one layer; :func:`set_vit_token_layout` sets it on every
Linear of a timm vision transformer's blocks (``fst.sparsify`` calls it), and the backends
split Eq. 3 into the prefix segment and the patch segment
(:meth:`fst.rules.weight_grad.WeightGradRule.token_operands`). What the prefix tokens get is
the strategy option ``prefix_tokens``: ``"dense"`` (default: their ``dY X^T`` is computed
unpruned) or ``"include"`` (they form one more row, pruned by the Eq. 3 rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["TokenLayout", "vit_token_layout", "set_vit_token_layout", "token_layout_of"]

# Attribute on nn.Linear modules; kept by fst.sparsify's in-place class switch.
ATTR = "token_layout"


@dataclass(frozen=True)
class TokenLayout:
    """``prefix`` non-image tokens, then a ``grid = (rows, cols)`` patch grid in raster order."""

    prefix: int
    grid: tuple[int, int]

    def __post_init__(self):
        rows, cols = self.grid
        if self.prefix < 0 or rows < 1 or cols < 1:
            raise ValueError(f"TokenLayout needs prefix >= 0 and a positive grid, got {self}")
        object.__setattr__(self, "grid", (int(rows), int(cols)))

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    @property
    def width(self) -> int:
        """Row length of the patch grid (the conv's Wo for Eq. 3)."""
        return self.grid[1]

    def check(self, shape: tuple[int, ...], layer: str = "") -> None:
        """Fail, naming the fix, unless ``shape`` is ``[..., num_tokens, C]``."""
        if len(shape) >= 3 and shape[-2] == self.num_tokens:
            return
        where = f"layer {layer!r}: " if layer else ""
        raise ValueError(
            f"{where}token layout {self.describe()} = {self.num_tokens} tokens on dim -2, but "
            f"the input has shape {tuple(shape)}. The image size or the token sequence changed "
            "after the layout was set (timm dynamic_img_size, patch dropout, another img_size): "
            "build the model at the size it runs at, or clear the layout with "
            "fst.tokens.set_vit_token_layout(model, None) (Eq. 3 then sees one flat row)"
        )

    def describe(self) -> str:
        return f"{self.prefix} prefix + {self.grid[0]}x{self.grid[1]} grid"


def vit_token_layout(model: nn.Module) -> TokenLayout | None:
    """The token layout of a timm vision transformer's blocks, or None if it has none.

    Read from ``model.num_prefix_tokens`` and ``model.patch_embed.grid_size`` (timm's
    ``VisionTransformer``, ``VisionTransformerDistilled``, DeiT-3, ...: prefix tokens first,
    then the flattened grid). None when the model is not one, or when the token sequence is not
    fixed: ``dynamic_img_size`` (the grid follows the input) or patch dropout (tokens dropped
    at random while training).
    """
    embed = getattr(model, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if grid is None or prefix is None or not isinstance(getattr(model, "blocks", None), nn.Module):
        return None
    if getattr(model, "dynamic_img_size", False) or not getattr(embed, "flatten", True):
        return None
    patch_drop = getattr(model, "patch_drop", None)
    if patch_drop is not None and not isinstance(patch_drop, nn.Identity):
        return None
    return TokenLayout(int(prefix), tuple(grid))


def set_vit_token_layout(model: nn.Module, layout: TokenLayout | None | str = "auto") -> int:
    """Set the token layout of every Linear in ``model.blocks`` (their inputs are [B, T, C]).

    ``layout="auto"`` reads it with :func:`vit_token_layout` (nothing is set for models that
    are no fixed-size vision transformer); None clears it. Layers outside the blocks (the
    classifier head on pooled [B, C] features, attention-pooling heads) keep none. Returns the
    number of layers set.
    """
    if isinstance(layout, str):
        if layout != "auto":
            raise ValueError(f"layout={layout!r}: a TokenLayout, None or 'auto'")
        layout = vit_token_layout(model)
        if layout is None:
            return 0
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        raise ValueError(f"{type(model).__name__} has no .blocks: set the layout per layer")
    n = 0
    for m in blocks.modules():
        if isinstance(m, nn.Linear):
            setattr(m, ATTR, layout)
            n += layout is not None
    return n


def token_layout_of(m: nn.Module) -> TokenLayout | None:
    """The layout set on layer ``m`` (None: the token axis is one flat row)."""
    return getattr(m, ATTR, None)
