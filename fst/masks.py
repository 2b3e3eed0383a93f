"""N:M structured masks (2:4 by default), transposable masks, a validator, and the unstructured
and filter masks of the baselines (magnitude, per-example top-k, L2 filter norm).

Convention: a mask is a ``torch.bool`` tensor of the same shape as the tensor it prunes,
``True`` = keep. "2:4 along ``dim``" means that every group of 4 consecutive entries along
``dim`` (a trailing partial group counted as if zero-padded) has at most 2 nonzeros; that
``dim`` must be the reduction dimension of the GEMM the pruned operand feeds, because that is
the dimension Sparse Tensor Cores compress.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from fst.masks_cuda import available, nm24_mask

__all__ = [
    "nm_mask",
    "nm_mask_of_abs",
    "apply_mask",
    "transposable_mask",
    "is_nm",
    "TRANSPOSABLE_PATTERNS",
    "num_pruned",
    "magnitude_mask",
    "topk_mask",
    "filter_mask",
]


def _groups(t: torch.Tensor, dim: int, m: int) -> torch.Tensor:
    """View ``t`` as ``[pre, G, m, post]``: groups of ``m`` along ``dim``, zero-padded.

    ``dim`` is not moved, so grouping along a leading dim (S(W^T) along Co) costs no
    transpose: each of the ``m`` slices ``g[:, :, i]`` is then a contiguous block.
    """
    shape = t.shape
    length = shape[dim]
    pre = math.prod(shape[:dim])
    post = math.prod(shape[dim + 1 :])
    x = t.reshape(pre, length, post)
    pad = (-length) % m
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(pre, (length + pad) // m, m, post)


def _ungroup(g: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    x = g.reshape(g.shape[0], -1, g.shape[-1])
    if x.shape[1] != shape[dim]:
        x = x[:, : shape[dim]]
    return x.reshape(shape)


def nm_mask(t: torch.Tensor, dim: int = -1, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest ``|t|`` in each group of ``m`` consecutive entries along ``dim``.

    A trailing partial group behaves as if zero-padded; ties go to the lower index (so a group
    of equal values, zeros included, keeps its first ``n``). Vectorised: the rank of every
    entry inside its group is decided from one comparison per pair of entries, no sort.

    Args:
        t: any shape, any float dtype, any device.
        dim: the dimension the groups run along.
    Returns:
        bool tensor shaped like ``t``, exactly ``min(n, group length)`` ``True`` per group.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got n={n}, m={m}")
    if t.numel() == 0:
        return torch.zeros_like(t, dtype=torch.bool)
    return nm_mask_of_abs(t.detach().abs(), dim, n, m)


def nm_mask_of_abs(a: torch.Tensor, dim: int = -1, n: int = 2, m: int = 4) -> torch.Tensor:
    """:func:`nm_mask` of a tensor that already holds magnitudes (saves a pass when shared)."""
    dim = dim % a.dim()
    if (n, m) == (2, 4) and a.is_cuda and not torch.compiler.is_compiling():
        if available(a):  # one kernel instead of sixteen (see fst.masks_cuda)
            return nm24_mask(a, dim)
    g = _groups(a, dim, m)  # [pre, G, m, post]
    if torch.compiler.is_compiling():
        keep = _keep_ranked(g, n)
    else:
        keep = _keep_2of4(g) if (n, m) == (2, 4) else _keep_rank(g, n)
    return _ungroup(keep, a.shape, dim)


def _keep_rank(g: torch.Tensor, n: int) -> torch.Tensor:
    """Generic N:M: rank_i = #{j : |t_j| > |t_i|, or equal with j < i}; keep rank < n.

    One comparison per pair (i < j): i beats j iff ``g_i >= g_j`` (the lower index wins ties).
    """
    m = g.shape[2]
    cols = g.unbind(2)
    rank = [torch.zeros_like(cols[0], dtype=torch.uint8) for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            i_wins = cols[i] >= cols[j]
            rank[j] += i_wins
            rank[i] += ~i_wins
    return torch.stack(rank, dim=2) < n


def _keep_ranked(g: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`_keep_rank` as one reduction per entry: the formulation for ``torch.compile``.

    Same keep-set (the same ties), written so that inductor emits a single loop computing each
    entry's rank from its group (the comparisons of the eager versions would each be stored
    and re-read, interleaved through a stack: several times slower compiled). In eager mode
    its ``[.., m, m, ..]`` intermediate makes it the slowest, hence the dispatch.
    """
    m = g.shape[2]
    i = torch.arange(m, device=g.device)
    lower = (i[None, :] < i[:, None]).view(1, 1, m, m, 1)  # [i, j]: j < i
    gi, gj = g.unsqueeze(3), g.unsqueeze(2)  # entry i at dim 2, rival j at dim 3
    beaten = (gj > gi) | ((gj == gi) & lower)
    return beaten.sum(3, dtype=torch.uint8) < n


def _keep_2of4(g: torch.Tensor) -> torch.Tensor:
    """The hot 2:4 case of :func:`_keep_rank`: six comparisons, then counting in uint8.

    ``w_ij`` (i < j) is 1 where entry i beats entry j (``g_i >= g_j``: the lower index wins
    ties). An entry is kept iff it beats at least two of its three rivals:
    ``k0 = w01 + w02 + w03 >= 2``; ``k1 = (1 - w01) + w12 + w13 >= 2``, i.e. ``w12 + w13 > w01``;
    ``k2 = (1 - w02) + (1 - w12) + w23 >= 2``, i.e. ``w02 + w12 <= w23``; ``k3 = (1 - w03) +
    (1 - w13) + (1 - w23) >= 2``, i.e. ``w03 + w13 + w23 <= 1``. Sixteen element-wise ops on
    a quarter of the tensor each (bools reinterpreted as uint8, no copies): few ops matter
    as much as few bytes, since every op is a separate (multi-threaded) loop in eager mode.
    """
    a, b, c, d = g.unbind(2)
    u8 = torch.uint8
    w01, w02, w03 = (a >= b).view(u8), (a >= c).view(u8), (a >= d).view(u8)
    w12, w13, w23 = (b >= c).view(u8), (b >= d).view(u8), (c >= d).view(u8)
    k0 = (w01 + w02 + w03) >= 2
    k1 = (w12 + w13) > w01
    k2 = (w02 + w12) <= w23
    k3 = (w03 + w13 + w23) <= 1
    return torch.stack((k0, k1, k2, k3), dim=2)


def apply_mask(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t * mask`` for a bool ``mask`` shaped like ``t``, bit-identical either way.

    Eager: multiplied by the mask viewed as uint8, which converts faster than bool. Compiled:
    ``t * mask`` (inductor fuses the conversion; a bool->uint8 view would be a slow bitcast).
    """
    if t.dim() > 2 and t.is_contiguous() and mask.is_contiguous():
        # as a 2-D product: inductor vectorizes its one long inner loop, while over a conv
        # weight's (Co, Ci, kh, kw) it loops over kh*kw = 9 entries at a time, unvectorized
        return apply_mask(t.view(t.shape[0], -1), mask.view(t.shape[0], -1)).view(t.shape)
    if torch.compiler.is_compiling():
        return t * mask
    return t * mask.view(torch.uint8)


def is_nm(mask: torch.Tensor, dim: int, n: int = 2, m: int = 4) -> bool:
    """True if every group of ``m`` consecutive entries along ``dim`` has at most ``n`` nonzeros.

    Accepts a bool mask or a pruned tensor (nonzero = kept). Partial trailing groups count as
    zero-padded.
    """
    if mask.numel() == 0:
        return True
    g = _groups((mask != 0).to(torch.int32), dim % mask.dim(), m)
    return bool((g.sum(2) <= n).all())


def _transposable_patterns() -> torch.Tensor:
    """All 90 binary 4x4 matrices with exactly two ones in every row and every column: [90, 16]."""
    rows = [r for r in itertools.product((0, 1), repeat=4) if sum(r) == 2]
    pats = [p for p in itertools.product(rows, repeat=4) if all(sum(c) == 2 for c in zip(*p))]
    return torch.tensor(pats, dtype=torch.float32).reshape(len(pats), 16)


TRANSPOSABLE_PATTERNS = _transposable_patterns()
assert TRANSPOSABLE_PATTERNS.shape == (90, 16)


def transposable_mask(w2d: torch.Tensor) -> torch.Tensor:
    """Exact transposable 2:4 mask (TSM, Hubara et al. 2021) of a 2-D tensor.

    In each 4x4 block (the tensor zero-padded to multiples of 4) picks, among the 90 patterns
    with two kept entries in every row and every column, the one maximising the kept ``|w|``
    sum; all blocks are scored at once with one ``[B, 16] @ [16, 90]`` matmul. The mask is 2:4
    along both dims, so ``w * mask`` serves Eq. 1 (groups along dim 1) and its transpose Eq. 2
    (groups along dim 0). Ties go to the lowest pattern index.

    Args:
        w2d: ``[R, C]``.
    Returns:
        bool ``[R, C]``.
    """
    if w2d.dim() != 2:
        raise ValueError(f"transposable_mask needs a 2-D tensor, got shape {tuple(w2d.shape)}")
    r, c = w2d.shape
    a = w2d.detach().abs().float()
    a = F.pad(a, (0, (-c) % 4, 0, (-r) % 4))
    rb, cb = a.shape[0] // 4, a.shape[1] // 4
    blocks = a.reshape(rb, 4, cb, 4).permute(0, 2, 1, 3).reshape(-1, 16)  # [B, 16]
    pats = TRANSPOSABLE_PATTERNS.to(a.device)
    with torch.autocast(a.device.type, enabled=False):  # bf16 scores would pick other patterns
        best = (blocks @ pats.T).argmax(dim=1)  # [B]
    mask = pats[best].reshape(rb, cb, 4, 4).permute(0, 2, 1, 3).reshape(rb * 4, cb * 4)
    return mask[:r, :c].bool()


def num_pruned(n: int, ratio: float) -> int:
    """How many of ``n`` entries a pruning ``ratio`` in [0, 1] removes: ``floor(ratio * n)``
    (a hair of slack so that e.g. ``0.3 * 10`` counts 3, not 2, in floating point)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1], got {ratio}")
    return min(n, math.floor(ratio * n + 1e-9))


def _keep_largest(a: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of the ``keep`` largest entries of each row of the 2-D ``a``."""
    mask = torch.zeros_like(a, dtype=torch.bool)
    if keep > 0:
        mask.scatter_(1, a.topk(keep, dim=1, sorted=False).indices, True)
    return mask


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured magnitude mask of one tensor: keep its ``n - floor(sparsity * n)`` largest
    ``|w|`` (DPF, RigL's drop step: layer-wise). Bool, shaped like ``w``."""
    a = w.detach().abs().reshape(1, -1)
    return _keep_largest(a, a.shape[1] - num_pruned(a.shape[1], sparsity)).view(w.shape)


def topk_mask(t: torch.Tensor, ratio: float, start_dim: int = 1) -> torch.Tensor:
    """meProp's top-k: in each example (the dims before ``start_dim``; dim 0 = the batch) keep
    the ``n - floor(ratio * n)`` largest ``|t|`` of its ``n`` entries (all dims from
    ``start_dim`` on, flattened). Bool, shaped like ``t``.

    Which of several equal magnitudes is kept is unspecified; it never changes ``t * mask``
    unless ties sit exactly at the cut (zeros, the common tie, give the same product).
    """
    a = t.detach().abs().reshape(math.prod(t.shape[:start_dim]), -1)
    return _keep_largest(a, a.shape[1] - num_pruned(a.shape[1], ratio)).view(t.shape)


def filter_mask(w: torch.Tensor, rate: float) -> torch.Tensor:
    """Soft filter pruning's selection: the ``floor(rate * Co)`` filters (dim 0 of ``w``) with
    the smallest L2 norm are pruned. Bool ``[Co]``, True = filter kept."""
    norms = w.detach().reshape(w.shape[0], -1).norm(p=2, dim=1)
    keep = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    n = num_pruned(w.shape[0], rate)
    if n:
        keep[norms.argsort(stable=True)[:n]] = False
    return keep
