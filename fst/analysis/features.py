"""Figure 5: a conv input ``X``, its adjacent-difference map ``X^ad`` and reconstruction ``X^r``.

Columns of the im2col matrix are horizontal neighbours of the feature map, so on a
``[H, W]`` map (Sec. 6.2):

- ``X^ad[:, i] = X[:, i] - X[:, i+1]`` (the last column has no neighbour and is left 0);
- ``X^r[:, i] = X^r[:, i+1] = X[:, i]`` for even ``i`` (each pruned odd column is filled with
  its kept left neighbour: the fixed mask of Eq. 7 plus the restoration of Eq. 9).

For display everything is scaled into [0, 1] by ``X``'s own range: ``X`` and ``X^r`` by
min-max, ``|X^ad|`` divided by ``max(X) - min(X)``, so 0 means "equal to the neighbour".
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


def adjacent_difference(x: torch.Tensor) -> torch.Tensor:
    """``x[..., i] - x[..., i+1]`` along the last dim; the last column is 0. Shape kept."""
    d = torch.zeros_like(x)
    d[..., :-1] = x[..., :-1] - x[..., 1:]
    return d


def reconstruct(x: torch.Tensor) -> torch.Tensor:
    """Keep even columns, fill each odd column with its left (even) neighbour. Shape kept."""
    r = x.clone()
    r[..., 1::2] = x[..., 0::2][..., : x[..., 1::2].shape[-1]]
    return r


def similarity_stats(x: torch.Tensor) -> dict[str, float]:
    """Over a ``[..., H, W]`` batch of maps, each scaled by its own range:

    ``mean_abs_ad``: mean ``|X^ad| / range``; ``share_ad_below_0.05``: share of positions with
    ``|X^ad| < 0.05 * range``; ``rel_err_r``: ``||X - X^r|| / ||X||``.
    """
    flat = x.flatten(0, -3)  # [B, H, W]
    rng = (flat.amax(dim=(-2, -1)) - flat.amin(dim=(-2, -1))).clamp_min(1e-12)[:, None, None]
    ad = adjacent_difference(flat)[..., :-1].abs() / rng
    err = (flat - reconstruct(flat)).norm() / flat.norm().clamp_min(1e-12)
    return {
        "mean_abs_ad": float(ad.mean()),
        "share_ad_below_0.05": float((ad < 0.05).double().mean()),
        "rel_err_r": float(err),
    }


def display_maps(x2d: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"X", "|X^ad|", "X^r"}`` of one ``[H, W]`` map, each in [0, 1] (see module doc)."""
    lo, hi = x2d.min(), x2d.max()
    rng = (hi - lo).clamp_min(1e-12)
    return {
        "X": (x2d - lo) / rng,
        "|X^ad|": adjacent_difference(x2d).abs() / rng,
        "X^r": (reconstruct(x2d) - lo) / rng,
    }


def most_varied_channel(x: torch.Tensor) -> int:
    """Index of the channel of a ``[C, H, W]`` map with the largest variance (most structure)."""
    return int(x.flatten(1).var(dim=1).argmax())


def plot_features(image: torch.Tensor, maps: dict[str, dict], path, subtitle: str = "") -> None:
    """Grid: one row per layer (``maps[label] = {"maps": display_maps(...), "stats": ...}``),
    columns X, |X^ad|, X^r; the input image (``[3, H, W]`` in [0, 1]) on the left of the first row.
    """
    rows = len(maps)
    fig = Figure(figsize=(13, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False)
    for r, (label, entry) in enumerate(maps.items()):
        ax0 = axes[r][0]
        s = entry["stats"]
        if r == 0:
            ax0.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax0.set_title("input image", fontsize=9)
            ax0.set_xticks([])
            ax0.set_yticks([])
        else:
            ax0.axis("off")
        ax0.text(
            0.0,
            -0.08 if r == 0 else 0.5,
            f"{label}\nall channels and images:\nmean |X^ad| / range = {s['mean_abs_ad']:.3f}\n"
            f"|X^ad| < 0.05 range: {100 * s['share_ad_below_0.05']:.0f}%\n||X - X^r|| / ||X|| = {s['rel_err_r']:.2f}",
            transform=ax0.transAxes,
            va="top" if r == 0 else "center",
            fontsize=8,
        )
        for c, (kind, m) in enumerate(entry["maps"].items(), start=1):
            ax = axes[r][c]
            im = ax.imshow(m.numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{label}: {kind}", fontsize=9)
            ax.set_xlabel("column (W)", fontsize=8)
            ax.set_ylabel("row (H)", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.savefig(path, dpi=110)
