"""Figure 4: entropy ``H(X)`` and conditional entropy ``H(X|X')`` of conv inputs (Sec. 6.1).

A feature map is quantised uniformly to 8 bits (256 bins between its min and max). ``X'`` is
the adjacent column: in the im2col domain two adjacent columns of ``X`` hold horizontally
neighbouring pixels of the feature map (Figure 3b), so the pairs ``(X, X')`` are the pairs
``(x[..., w+1], x[..., w])`` of a ``[C, H, W]`` map. ``H(X|X') = H(X, X') - H(X')``, in bits,
both entropies taken over the same pairs so that ``H(X) - H(X|X') = I(X; X') >= 0``.

Estimation: the joint histogram has 65,536 cells, so plug-in estimates from one small map are
biased low (by ~0.3 bit for 150k pairs of i.i.d. noise). Counts are therefore pooled over
images (each image still quantised on its own range) and the Miller-Madow correction
``(occupied cells - 1) / (2 n ln 2)`` is added; the spread is the std over disjoint groups of
images. White-noise *images* (input of ``conv1``) have ``I(X; X') = 0`` exactly, so their
measured gap is the residual estimator bias.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

BINS = 256


def quantize(
    x: torch.Tensor, bins: int = BINS, dims: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Uniform quantisation into ``bins`` levels over ``[min, max]`` (int64, shape of ``x``).

    ``dims``: reduce min/max over these dims only (e.g. ``(-2, -1)``: one range per channel);
    ``None``: one range for the whole tensor. A constant range maps to level 0.
    """
    if dims is None:
        lo, hi = x.min(), x.max()
    else:
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    span = hi - lo
    q = ((x - lo) / torch.where(span > 0, span, torch.ones_like(span)) * bins).floor().long()
    return q.clamp_(0, bins - 1)


def pair_codes(q: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, X')``: each entry and its predecessor along ``dim`` (both one shorter along it)."""
    length = q.shape[dim]
    if length < 2:
        raise ValueError(
            f"need at least 2 entries along dim {dim} to pair neighbours, got shape {tuple(q.shape)}"
        )
    return q.narrow(dim, 1, length - 1), q.narrow(dim, 0, length - 1)


def entropy_from_counts(counts: torch.Tensor, miller_madow: bool = True) -> float:
    """Entropy in bits of a histogram; Miller-Madow bias correction unless disabled."""
    counts = counts.double()
    n = counts.sum()
    if n == 0:
        raise ValueError("empty histogram")
    nz = counts[counts > 0]
    p = nz / n
    h = float(-(p * p.log2()).sum())
    if miller_madow:
        h += (nz.numel() - 1) / (2 * float(n) * math.log(2))
    return h


class PairHistogram:
    """Counts of ``X``, ``X'`` and ``(X, X')`` codes, accumulated over any number of maps."""

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.cur = torch.zeros(bins, dtype=torch.long)
        self.prev = torch.zeros(bins, dtype=torch.long)
        self.joint = torch.zeros(bins * bins, dtype=torch.long)

    def add(self, q: torch.Tensor, dim: int = -1) -> None:
        """Add the neighbour pairs of the quantised map ``q`` (codes in ``[0, bins)``)."""
        cur, prev = pair_codes(q, dim)
        b = self.bins
        self.cur += torch.bincount(cur.flatten(), minlength=b)
        self.prev += torch.bincount(prev.flatten(), minlength=b)
        self.joint += torch.bincount((cur * b + prev).flatten(), minlength=b * b)

    def entropies(self, miller_madow: bool = True) -> tuple[float, float]:
        """``(H(X), H(X|X'))`` in bits."""
        h_x = entropy_from_counts(self.cur, miller_madow)
        h_cond = entropy_from_counts(self.joint, miller_madow) - entropy_from_counts(
            self.prev, miller_madow
        )
        return h_x, h_cond


def entropy_pair(
    x: torch.Tensor, bins: int = BINS, dim: int = -1, miller_madow: bool = True
) -> tuple[float, float]:
    """``(H(X), H(X|X'))`` in bits of one tensor quantised as a whole, ``X'`` one step back along ``dim``."""
    h = PairHistogram(bins)
    h.add(quantize(x, bins), dim)
    return h.entropies(miller_madow)


def layer_entropies(
    feats: dict[str, torch.Tensor],
    bins: int = BINS,
    per_channel: bool = False,
    groups: int = 4,
    miller_madow: bool = True,
) -> list[dict]:
    """Per layer ``H(X)``, ``H(X|X')`` and ``H(X) - H(X|X')`` over pooled counts.

    Args:
        feats: ``{layer: [N, C, H, W]}``. Each image's ``[C, H, W]`` map is quantised on its own
            range, or each channel on its own (``per_channel``, which keeps differences of
            scale between channels out of ``I(X; X')``); pairs run along W.
        groups: images are split into this many disjoint groups; ``*_std`` is the std of the
            group estimates, the main values come from all images' counts pooled.
    """
    rows = []
    for name, f in feats.items():
        n = f.shape[0]
        k = max(1, min(groups, n))
        hists = [PairHistogram(bins) for _ in range(k)]
        for i, img in enumerate(f):
            hists[i * k // n].add(quantize(img, bins, (-2, -1) if per_channel else None))
        total = PairHistogram(bins)
        for h in hists:
            total.cur += h.cur
            total.prev += h.prev
            total.joint += h.joint
        h_x, h_c = total.entropies(miller_madow)
        per = torch.tensor([h.entropies(miller_madow) for h in hists], dtype=torch.float64)

        def std(v: torch.Tensor, k: int = k) -> float:
            return float(v.std()) if k > 1 else 0.0

        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, f.shape[1:])),
                "images": n,
                "pairs": int(total.cur.sum()),
                "H_X": h_x,
                "H_X_std": std(per[:, 0]),
                "H_X_given_Xadj": h_c,
                "H_X_given_Xadj_std": std(per[:, 1]),
                "similarity": h_x - h_c,
                "similarity_std": std(per[:, 0] - per[:, 1]),
            }
        )
    return rows


def plot_entropies(results: dict[str, list[dict]], path, subtitle: str = "") -> None:
    """One panel per input kind (e.g. natural vs white noise), bars H(X) and H(X|X') per layer."""
    fig = Figure(figsize=(6.5 * len(results), 4.8))
    axes = fig.subplots(1, len(results), sharey=True, squeeze=False)
    for ax, (panel, (kind, rows)) in zip(axes[0], zip("abcdef", results.items())):
        x = np.arange(len(rows))
        ax.bar(
            x - 0.2,
            [r["H_X"] for r in rows],
            0.4,
            yerr=[r["H_X_std"] for r in rows],
            capsize=3,
            label="H(X)",
        )
        ax.bar(
            x + 0.2,
            [r["H_X_given_Xadj"] for r in rows],
            0.4,
            yerr=[r["H_X_given_Xadj_std"] for r in rows],
            capsize=3,
            label="H(X|X')",
        )
        ax.set_xticks(x, [r["layer"] for r in rows], rotation=25, ha="right")
        ax.set_xlabel("input of conv layer")
        ax.set_title(f"({panel}) {kind} inputs, {rows[0]['images']} images")
        ax.set_ylim(0, 8.8)
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("bits (256-bin uniform quantisation)")
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
