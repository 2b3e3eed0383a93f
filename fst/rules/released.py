"""The authors' released code's two GEMM rules, where it differs from the paper.

Facts (``shared/paper/README.md``); each is a rule, chosen by a strategy option:

- Eq. 3 ``random4`` (option ``x_pattern="random4"``): the im2col matrix X (rows Ci*kh*kw,
  columns ``step * H*W`` for ``step = min(im2col_step, batch)`` samples per chunk,
  sample-major) is masked per chunk with one of four fixed patterns drawn uniformly at random:
  ``b`` keep odd columns; ``c`` keep (row + col) odd (zero even columns in even rows and odd
  columns in odd rows); ``d`` keep (row + col) even; ``a`` the ``c`` checkerboard applied to X
  viewed as (-1, 4). Information Restoration is ``g + ir_coef * roll(g, +1)`` over the
  flattened H*W of each sample (wrap-around), at every position before masking.
- Eq. 2 ``regrouped`` (option ``wt_source="pruned"``): the forward-pruned weight pruned again
  in 4x4 blocks of the flattened weight (``(a w)(b h) -> (a b)(w h)``, w=4, h=1): the
  regrouped fours are ``flat[16a + 4w + b]`` for w = 0..3 (stride 4 inside one filter), and
  the two smallest of each are zeroed. These groups do not run along Co, so the result is
  generally *not* 2:4 along the reduction dimension of Eq. 2.

Pattern draws use the global torch CPU generator, which the run seeds, so runs repeat and exact
resume restores them with the other RNG states. Options ``x_patterns`` (the letters drawn from;
one letter forces that pattern, drawing nothing) and ``im2col_step`` (256 in the release) are
options of the ``random4`` rule (strategy options), so tests and analyses need no module state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fst.masks import apply_mask, nm_mask
from fst.rules.base import option, register
from fst.rules.input_grad import InputGradRule
from fst.rules.weight_grad import WeightGradRule

PATTERNS = "abcd"


def draw_pattern_ids(n_chunks: int, letters: str = PATTERNS) -> torch.Tensor:
    """One pattern per im2col chunk as indices into :data:`PATTERNS` (int64 ``[n_chunks]``),
    uniform over ``letters``; a single letter draws nothing.

    Tensors only (no ``.tolist()``), so ``torch.compile`` traces the draw without a graph
    break; it consumes the global generator exactly as :func:`draw_patterns`.
    """
    ids = torch.tensor([PATTERNS.index(letter) for letter in letters])
    if len(letters) == 1:
        return ids.expand(n_chunks)
    return ids[torch.randint(len(letters), (n_chunks,))]


def draw_patterns(n_chunks: int, letters: str = PATTERNS) -> list[str]:
    """:func:`draw_pattern_ids` as letters."""
    return [PATTERNS[i] for i in draw_pattern_ids(n_chunks, letters).tolist()]


def _pattern_rule(kind: str, r: torch.Tensor, c: torch.Tensor, cols: int) -> torch.Tensor:
    if kind == "b":
        return (c % 2 == 1) & (r >= 0)
    if kind == "c":
        return (r + c) % 2 == 1
    if kind == "d":
        return (r + c) % 2 == 0
    if kind == "a":
        flat = r * cols + c
        return (flat // 4 + flat % 4) % 2 == 1
    raise ValueError(f"unknown X pattern {kind!r}; valid: {', '.join(PATTERNS)}")


def _check_letters(letters) -> str:
    if not letters or set(letters) - set(PATTERNS):
        return f"x_patterns={letters!r}: letters of 'abcd', at least one"
    return ""


def _tiles(cols: int, device=None) -> torch.Tensor:
    """The 8x8 tile of every pattern for chunks of ``cols`` columns: bool ``[4, 8, 8]``."""
    i = torch.arange(8, device=device)
    return torch.stack([_pattern_rule(k, i[:, None], i[None, :], cols) for k in PATTERNS])


def _expand_tile(tile: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    r = torch.arange(rows, device=tile.device) % 8
    c = torch.arange(cols, device=tile.device) % 8
    return tile[r[:, None], c[None, :]]


def pattern_mask(kind: str, rows: int, cols: int, device=None) -> torch.Tensor:
    """Bool keep-mask ``[rows, cols]`` of pattern ``kind`` on one im2col chunk.

    Every pattern depends only on (row mod 8, col mod 8) (``a`` through ``(row*cols + col) mod
    8``), so it is read from an 8x8 tile instead of computed at full size.
    """
    if kind not in PATTERNS:
        raise ValueError(f"unknown X pattern {kind!r}; valid: {', '.join(PATTERNS)}")
    return _expand_tile(_tiles(cols, device)[PATTERNS.index(kind)], rows, cols)


@register
class Random4(WeightGradRule):
    """Eq. 3 as released: ``dW = sum_chunks roll_ir(dY) (X * P_chunk)^T``."""

    key = "random4"
    operand = "X^T"
    prunes_x = True
    ir_coef: float = option(
        0.0, "with x_pattern=random4: coefficient of the rolled gradient in IR (release: 0.03)"
    )
    x_patterns: str = option(
        PATTERNS,
        "with x_pattern=random4: the release's patterns drawn from (default 'abcd'; one letter "
        "forces that pattern)",
        check=_check_letters,
    )
    im2col_step: int = option(
        256,
        "with x_pattern=random4: samples per im2col chunk (release: 256)",
        check=lambda v: "" if int(v) >= 1 else f"im2col_step={v} must be >= 1",
    )

    def formula(self, plan) -> str:
        g = f"(dY + {self.ir_coef:g}*roll(dY))" if self.ir_coef else "dY"
        return f"{g} P4(X^T)"

    def draws_random(self, plan) -> bool:
        return len(self.x_patterns) > 1

    def tensor_core(self, plan) -> bool:
        # each pattern keeps 2 of every 4 consecutive columns (a: when the chunk has a multiple of 4
        # columns, as ImageNet-size maps do)
        return True

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        # to the release's layout: [B, features, positions], samples B = the leading dims
        dyt = dy.movedim(dim, -1)
        if self.ir_coef:
            dyt = dyt + self.ir_coef * torch.roll(dyt, 1, dims=-1)
        xt = x.movedim(dim, -1)
        lead, (k, length) = xt.shape[:-2], xt.shape[-2:]
        xt = xt.reshape(-1, k, length)
        n = xt.shape[0]
        step = min(int(self.im2col_step), n)
        starts = range(0, n, step)
        ids = draw_pattern_ids(len(starts), self.x_patterns).to(x.device)
        keep = []
        for j, s0 in enumerate(starts):
            cols = (min(s0 + step, n) - s0) * length
            tile = _tiles(cols, x.device).index_select(0, ids[j : j + 1])[0]  # no .item()
            m = _expand_tile(tile, k, cols)
            keep.append(m.view(k, -1, length).transpose(0, 1))  # sample-major columns
        xt = apply_mask(xt, torch.cat(keep)).reshape(*lead, k, length)
        return dyt.movedim(-1, dim), xt.movedim(-1, dim)


@register
class Regrouped(InputGradRule):
    """The release's Eq. 2 weight: S(W) pruned again, 2 of 4 in each regrouped four.

    The flattened weight (zero-padded to a multiple of 16) is viewed as ``[A, 4, 4]`` =
    ``flat[16a + 4w + b]``; each regrouped four runs along the middle axis.
    """

    key = "regrouped"
    operand = "W^T"
    prunes_weight = True

    def formula(self, plan) -> str:
        return "R(S(W))^T dY"

    def pattern(self, plan) -> str:
        return "2:4 in fours regrouped inside one filter"

    def weight(self, w, w_fwd, plan, abs_w=None, state=None):
        flat = w_fwd.reshape(-1)
        pad = (-flat.numel()) % 16
        blocks = F.pad(flat, (0, pad)).view(-1, 4, 4)
        kept = apply_mask(blocks, nm_mask(blocks, dim=1))
        return kept.reshape(-1)[: flat.numel()].view(w_fwd.shape)
