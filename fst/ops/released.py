"""The authors' released code's arithmetic, where it differs from the paper.

Facts (see ``shared/paper/README.md``), each behind a strategy option:

- ``x_pattern="random4"``: the im2col matrix X (rows Ci*kh*kw, columns ``step * H*W`` with
  ``step = min(256, batch)`` samples per chunk, sample-major) is masked per chunk with one of
  four fixed patterns, drawn uniformly at random:
  ``b`` keep odd columns; ``c`` keep (row + col) odd (zero even columns in even rows and odd
  columns in odd rows); ``d`` keep (row + col) even; ``a`` the ``c`` checkerboard applied to
  X viewed as (-1, 4). With it, Information Restoration is the release's
  ``g + ir_coef * roll(g, +1)`` over the flattened H*W of each sample (wrap-around),
  applied at every position before masking.
- ``wt_source="pruned"``: Eq. 2 uses the forward-pruned weight pruned again in 4x4 blocks of
  the flattened weight (``(a w)(b h) -> (a b)(w h)``, w=4, h=1): the regrouped fours are
  ``flat[16a + 4w + b]`` for w = 0..3 (stride 4 inside one filter), and the two smallest of
  each are zeroed. These groups do not run along Co, so the result is generally *not* 2:4
  along the reduction dimension of Eq. 2.

Pattern draws use the global torch CPU generator, which the run seeds, so runs repeat and
exact resume restores them with the other RNG states.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from fst.masks import nm_mask

PATTERNS = ("a", "b", "c", "d")
IM2COL_STEP = 256
_forced: str | None = None


@contextmanager
def forced_pattern(kind: str):
    """Use pattern ``kind`` for every chunk inside the block (tests, analyses)."""
    global _forced
    if kind not in PATTERNS:
        raise ValueError(f"unknown X pattern {kind!r}; valid: {PATTERNS}")
    prev, _forced = _forced, kind
    try:
        yield
    finally:
        _forced = prev


def draw_patterns(n_chunks: int) -> list[str]:
    """One pattern per im2col chunk, uniform over :data:`PATTERNS`."""
    if _forced is not None:
        return [_forced] * n_chunks
    return [PATTERNS[i] for i in torch.randint(len(PATTERNS), (n_chunks,)).tolist()]


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
    raise ValueError(f"unknown X pattern {kind!r}; valid: {PATTERNS}")


def pattern_mask(kind: str, rows: int, cols: int, device=None) -> torch.Tensor:
    """Bool keep-mask ``[rows, cols]`` of pattern ``kind`` on one im2col chunk.

    Every pattern depends only on (row mod 8, col mod 8) (``a`` through ``(row*cols + col) mod
    8``), so it is read from an 8x8 tile instead of computed at full size.
    """
    i = torch.arange(8, device=device)
    tile = _pattern_rule(kind, i[:, None], i[None, :], cols)  # [8, 8]
    r = torch.arange(rows, device=device) % 8
    c = torch.arange(cols, device=device) % 8
    return tile[r[:, None], c[None, :]]


def roll_ir(g: torch.Tensor, coef: float) -> torch.Tensor:
    """``g + coef * roll(g, +1)`` along the last (positions) axis, wrapping inside each sample."""
    return g + coef * torch.roll(g, 1, dims=-1) if coef else g


def random4_weight_grad(dy: torch.Tensor, cols: torch.Tensor, coef: float) -> torch.Tensor:
    """Eq. 3 as released: ``dW = sum_chunks roll_ir(dY) (X * P_chunk)^T``.

    Args:
        dy: ``[N, Co, L]`` output gradient, positions flattened per sample.
        cols: ``[N, K, L]`` im2col matrices (for Linear: features x tokens).
    Returns:
        ``[Co, K]``.
    """
    n, k, length = cols.shape
    g = roll_ir(dy, coef)
    step = min(IM2COL_STEP, n)
    starts = range(0, n, step)
    dw = None
    for s0, kind in zip(starts, draw_patterns(len(starts))):
        s1 = min(s0 + step, n)
        m = pattern_mask(kind, k, (s1 - s0) * length, cols.device)
        m = m.view(k, s1 - s0, length).transpose(0, 1)  # columns are sample-major
        part = torch.einsum("nol,nkl->ok", g[s0:s1], cols[s0:s1] * m)
        dw = part if dw is None else dw + part
    return dw


def regrouped_wt(w_fwd: torch.Tensor) -> torch.Tensor:
    """The release's Eq. 2 weight: S(W) pruned again, 2 of 4 in each regrouped four.

    The flattened weight (zero-padded to a multiple of 16) is viewed as ``[A, 4, 4]`` =
    ``flat[16a + 4w + b]``; each regrouped four runs along the middle axis.
    """
    flat = w_fwd.reshape(-1)
    pad = (-flat.numel()) % 16
    blocks = F.pad(flat, (0, pad)).view(-1, 4, 4)
    kept = blocks * nm_mask(blocks, dim=1)
    return kept.reshape(-1)[: flat.numel()].view(w_fwd.shape)


def conv_cols(x: torch.Tensor, weight_shape, geom) -> torch.Tensor:
    """im2col ``[N, K, L]`` of a conv input."""
    return F.unfold(x, weight_shape[2:], geom.dilation, geom.padding, geom.stride)
