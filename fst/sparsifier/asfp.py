"""ASFP: asymptotic soft filter pruning (He, Dong, Kang, Fu, Yan, Yang, IEEE Trans. Cybernetics
2019/2020; soft filter pruning, SFP: He et al., IJCAI 2018).

The method: at the end of every epoch, in every pruned conv layer, the filters (output
channels) with the smallest L2 norm are set to zero *in the weights*; all filters, the zeroed
ones included, keep being updated during the next epoch ("soft": a zeroed filter may grow
back). ASFP raises the pruning rate asymptotically instead of pruning at the full rate from
the start: ``P_t = a * exp(-k t) + b`` through ``P_0 = 0``, ``P_D = 3/4 P`` and
``P_{t_max} = P`` (epochs t). The final model has the last epoch's filters zeroed.

Sources: the SFP release (he-y/soft-filter-pruning, ``pruning_train.py``, class ``Mask``) for
the per-layer L2 selection (``floor(Co * (1 - keep_rate))`` filters), zeroing by multiplying
the weights only (optimizer state untouched), pruning after each epoch, every conv pruned
except the downsampling shortcuts (``skip_downsample``; the sparsity group's YAML excludes
``*downsample*``), the final Linear not pruned (``dense_linear``). The asymptotic formula is
the ASFP paper's (Sec. III), recalled: the paper's text was not available offline, so the
anchor ``P_D = 3P/4`` and ``D`` are the choices to check (``d_fraction`` = D / t_max, 0.25).

Choices: ``target=0.3`` (the FST paper's Table 3: "Channel 30%x1"); trained from scratch (the
SFP release starts from a pretrained ImageNet model; Table 3 marks ASFP "not from scratch").
In this framework: strategy ``asfp``, Eq. 1 rule ``soft_filters`` (the forward multiplies W
as it is), Eq. 2 and 3 dense. ``state["mask"]`` records the last epoch's kept filters
(bool [Co]) for reports; no rule reads it.

Observed (``results/README.md``, digits_hard, from scratch): a zeroed filter followed by
BatchNorm has zero batch variance, so BatchNorm's backward pass scales its gradient by
1/sqrt(eps); the regrowing filters swing widely and evaluation with the running statistics
collapses while training goes on. The release behaves the same (it zeroes only the conv
weights); no correction is added here.
"""

from __future__ import annotations

from fst.masks import filter_mask
from fst.sparsifier.base import Sparsifier, register


def _solve_u(r: float, tol: float = 1e-15) -> float:
    """u in (0, 1) with ``(1 - u^r) / (1 - u) = 4/3`` (bisection; the left side rises in u)."""
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if (1 - mid**r) / (1 - mid) < 4 / 3:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def asymptotic_rate(epoch: float, target: float, epochs: float, d_fraction: float) -> float:
    """ASFP's ``P_t = a exp(-k t) + b`` with ``P_0 = 0``, ``P_D = 3/4 target``,
    ``P_epochs = target`` and ``D = d_fraction * epochs``.

    With ``u = exp(-k D)`` the three anchors give ``P_t = target * (1 - u^(t/D)) /
    (1 - u^(epochs/D))`` and ``(1 - u^r) / (1 - u) = 4/3`` for ``r = epochs / D``.
    """
    d = d_fraction * epochs
    u = _solve_u(epochs / d)
    return target * (1 - u ** (epoch / d)) / (1 - u ** (epochs / d))


@register
class ASFP(Sparsifier):
    """Per-epoch soft filter pruning at an asymptotically rising rate (module docstring).

    Args:
        target: final share of each conv layer's filters zeroed (Table 3: 0.3).
        d_fraction: ASFP's D as a share of training: the rate reaches 3/4 of ``target`` there
            (must be below 3/4).
    """

    key = "asfp"
    provides = ("mask",)

    def __init__(
        self,
        model,
        optimizer=None,
        *,
        target: float = 0.3,
        d_fraction: float = 0.25,
        total_steps=None,
        steps_per_epoch=None,
        seed=0,
    ):
        if not 0.0 <= target < 1.0 or not 0.0 < d_fraction < 0.75:
            raise ValueError(
                f"asfp: need 0 <= target < 1 (got {target}) and 0 < d_fraction < 0.75 "
                f"(got {d_fraction})"
            )
        self.target, self.d_fraction = float(target), float(d_fraction)
        super().__init__(
            model, optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, seed=seed
        )

    def rate(self, epoch: int) -> float:
        """Pruning rate applied at the end of epoch ``epoch`` (1-based)."""
        epochs = self._need("total_steps") / self._need("steps_per_epoch")
        return asymptotic_rate(epoch, self.target, epochs, self.d_fraction)

    def update(self) -> None:
        spe = self._need("steps_per_epoch")
        if self.step_count % spe:
            return
        rate = self.rate(self.step_count // spe)
        for _, m, state in self.items():
            keep = filter_mask(m.weight, rate)
            m.weight.mul_(keep.view(-1, *([1] * (m.weight.dim() - 1))))
            state["mask"] = keep
