"""RigL: rigging the lottery (Evci, Gale, Menick, Castro, Elsen, ICML 2020).

The method (Sec. 3 and Algorithm 1 of the paper; details from the released code,
google-research/rigl, ``rigl/sparse_optimizers.py``, ``SparseRigLOptimizer``): train a sparse
network whose mask starts random; every ``delta_t`` steps until ``t_end``, in each layer drop
the ``k`` active weights with the smallest magnitude and grow the ``k`` inactive connections
(the just-dropped ones included) with the largest magnitude of the *dense* gradient, where
``k = f(t) * (number of active weights)`` and ``f(t) = alpha / 2 * (1 + cos(pi t / t_end))``.
Grown connections start at zero, with zero optimizer accumulators (the release's
``grow_init='zeros'`` and ``reset_momentum``); a connection dropped and regrown in the same
update keeps its value. Inactive weights get no gradient.

In this framework: strategy ``rigl``, Eq. 1 rule ``held`` (W times the mask held here), Eq. 2
``fwd``, Eq. 3 dense (so ``weight.grad`` holds the dense gradient RigL grows by). After every
optimizer step this sparsifier sets the inactive weights and their optimizer state back to
zero; for an element-wise optimizer (SGD, Adam) the active weights then follow exactly the
masked-gradient trajectory, and every connection grows from zero with zero momentum.

Choices (evidence for the coordinator's notes):

- Distribution: "uniform", every pruned layer at ``target=0.5``, with the first layer dense
  (RigL Sec. 3, "Uniform"; the release's ImageNet default ``first_layer_sparsity=0``):
  ``dense_first_layer`` keeps the first sparse layer (in module order) at an all-ones mask.
  Table 3 of the FST paper gives one ratio ("50%") for the whole model, which uniform
  realises layer by layer; ERK would spread it unevenly.
- Schedule: the paper's ImageNet values ``delta_t=100``, ``alpha=0.3``, cosine decay,
  ``t_end`` at 75% of training (``end=0.75``).
- The mask is updated after the optimizer step of every ``delta_t``-th step, from that step's
  dense gradient. The paper (and release) skip the weight update on a mask-update step; here
  the step is taken (1 in ``delta_t`` steps), since the sparsifier runs after the optimizer.
- The release adds 1e-5 Gaussian noise to the drop scores to break ties; here ties are broken
  by ``torch.topk`` (magnitudes of trained float weights rarely tie).
- The initial random mask is drawn from the sparsifier's generator (seeded with the run).
"""

from __future__ import annotations

import math

import torch

from fst.masks import num_pruned
from fst.sparsifier.base import Sparsifier, register


def drop_fraction(step: int, alpha: float, t_end: float) -> float:
    """RigL's cosine-decayed update fraction ``alpha / 2 * (1 + cos(pi * step / t_end))``."""
    return alpha / 2 * (1 + math.cos(math.pi * step / t_end))


def drop_and_grow(mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, frac: float):
    """One RigL update of one layer: ``(new mask, grown)`` (grown: connections that were
    inactive before, to be started at zero). Tensors shaped like the weight."""
    active = mask.reshape(-1)
    n_active = int(active.sum())
    k = math.floor(frac * n_active)
    if k == 0:
        return mask, torch.zeros_like(mask)
    # Drop: keep the n_active - k active weights of largest magnitude.
    score = weight.detach().abs().reshape(-1).masked_fill(~active, -math.inf)
    kept = torch.zeros_like(active)
    kept[score.topk(n_active - k, sorted=False).indices] = True
    # Grow: the k connections outside ``kept`` with the largest dense-gradient magnitude.
    score = grad.detach().abs().reshape(-1).masked_fill(kept, -math.inf)
    grow = torch.zeros_like(active)
    grow[score.topk(k, sorted=False).indices] = True
    new = (kept | grow).view(mask.shape)
    return new, (grow & ~active).view(mask.shape)


@register
class RigL(Sparsifier):
    """Random sparse start, periodic drop-by-magnitude / grow-by-gradient (module docstring).

    Args:
        target: share of each layer's weights pruned (Table 3: 0.5).
        update_every: steps between mask updates (RigL's delta_t: 100).
        drop_fraction: initial update fraction alpha (0.3), cosine-decayed to 0 at ``end``.
        end: mask updates stop at this share of training (RigL's t_end: 0.75).
        dense_first_layer: the first sparse layer keeps all its weights (uniform's rule).
    """

    key = "rigl"
    provides = ("mask",)

    def __init__(
        self,
        model,
        optimizer=None,
        *,
        target: float = 0.5,
        update_every: int = 100,
        drop_fraction: float = 0.3,
        end: float = 0.75,
        dense_first_layer: bool = True,
        total_steps=None,
        steps_per_epoch=None,
        seed=0,
    ):
        if not 0.0 <= target < 1.0 or int(update_every) < 1 or not 0.0 < end <= 1.0:
            raise ValueError(
                f"rigl: need 0 <= target < 1 (got {target}), update_every >= 1 (got "
                f"{update_every}), 0 < end <= 1 (got {end})"
            )
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"rigl: drop_fraction must be in [0, 1], got {drop_fraction}")
        self.target, self.update_every = float(target), int(update_every)
        self.alpha, self.end = float(drop_fraction), float(end)
        self.dense_first_layer = bool(dense_first_layer)
        super().__init__(
            model, optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, seed=seed
        )

    def init_state(self) -> None:
        for i, (_, m, state) in enumerate(self.items()):
            state["frozen"] = i == 0 and self.dense_first_layer
            if state["frozen"]:
                state["mask"] = torch.ones_like(m.weight, dtype=torch.bool)
                continue
            n = m.weight.numel()  # a uniformly random mask with the exact ratio
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=self.generator)[: n - num_pruned(n, self.target)]] = (
                True
            )
            state["mask"] = keep.view(m.weight.shape).to(m.weight.device)

    def _inactive_to_zero(self, m, mask: torch.Tensor) -> None:
        """Weights and optimizer accumulators outside ``mask`` back to zero: what the step's
        dense gradient moved there never happened for RigL (inactive weights get none)."""
        m.weight.mul_(mask)
        self.zero_optimizer_state(m.weight, mask)

    def update(self) -> None:
        t = self.step_count
        t_end = self.end * self._need("total_steps")
        live = [(name, m, state) for name, m, state in self.items() if not state["frozen"]]
        for _, m, state in live:
            self._inactive_to_zero(m, state["mask"])
        if t % self.update_every or t >= t_end:
            return
        frac = drop_fraction(t, self.alpha, t_end)
        for name, m, state in live:
            if m.weight.grad is None:
                raise RuntimeError(
                    f"rigl: {name} has no gradient at the mask update of step {t}; call the "
                    "sparsifier's step() right after optimizer.step(), before the gradients "
                    "are zeroed"
                )
            state["mask"], grown = drop_and_grow(state["mask"], m.weight, m.weight.grad, frac)
            # Grown connections were inactive, so they start at zero with zero accumulators;
            # dropped ones leave the forward pass and are zeroed too.
            self._inactive_to_zero(m, state["mask"])
