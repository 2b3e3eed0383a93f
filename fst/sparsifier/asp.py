"""ASP: NVIDIA's Automatic SParsity recipe (Mishra, Latorre, Pool, et al., "Accelerating
Sparse Deep Neural Networks", arXiv 2104.08378, 2021; released as ``apex.contrib.sparsity``).

The recipe (Sec. 3 of the paper): (1) train the dense network; (2) prune it once to 2:4 by
magnitude; (3) retrain with that mask fixed, repeating the original training schedule. The
released ASP computes the mask with pattern ``m4n2_1d`` along the input channels of each
kernel position (conv weights permuted to (kh, kw, Co, Ci)) or along ``in`` (Linear), masks the
gradients before and the weights after every optimizer step, and skips layers whose weight is
not a multiple of 8 (Co) x 16 (Ci) (``eligible_modules``: no sparse tensor core shape).

In this framework: strategy ``asp``, Eq. 1 rule ``held_nm`` (S_fix(W): the mask held here,
computed by the ``nm`` rule with ``mask_layout="cin"``), Eq. 2 ``fwd`` (the chain rule), Eq. 3
dense; after the prune this sparsifier multiplies W by its mask after every optimizer step (so
pruned weights stay zero; the active ones train exactly as with masked gradients).

Choices (evidence for the coordinator's notes):

- One run instead of two: the dense phase is the first ``dense_epochs`` epochs of the run and
  the fixed-mask phase the rest, under the run's single learning-rate schedule (null: half of
  training, so both phases are equally long as in the paper's recipe). The paper's exact
  recipe, a second full schedule from the trained dense weights with a fresh optimizer, is
  ``dense_epochs=0`` with ``model.pretrained=<dense run's last.pt>`` (the prune then happens
  before the first step). Table 3 marks ASP "not from scratch" for this reason.
- The prune happens after the optimizer step that completes ``round(dense_epochs *
  steps_per_epoch)`` steps, from the weights after that step.
- Layers apex would skip (Co % 8 or Ci % 16 nonzero: e.g. a 3-channel stem, a 10-class head)
  stay dense (``held_nm``'s ``skips``; ``state["mask"]`` None, ``state["skipped"]`` True).
- No SR-STE decay.
"""

from __future__ import annotations

from fst.sparsifier.base import Sparsifier, register


@register
class ASP(Sparsifier):
    """Dense phase, one-shot 2:4 magnitude prune, fixed mask (module docstring).

    Args:
        dense_epochs: epochs of dense training before the prune (float; None: half of the
            run; 0: prune the starting weights, e.g. a pretrained dense model).
    """

    key = "asp"
    provides = ("mask",)

    def __init__(
        self,
        model,
        optimizer=None,
        *,
        dense_epochs: float | None = None,
        total_steps=None,
        steps_per_epoch=None,
        seed=0,
    ):
        if dense_epochs is not None and dense_epochs < 0:
            raise ValueError(f"asp: dense_epochs must be >= 0 (or null), got {dense_epochs}")
        self.dense_epochs = dense_epochs
        super().__init__(
            model, optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, seed=seed
        )

    @property
    def prune_step(self) -> int:
        """The optimizer step after which the mask is computed (0: before the first step)."""
        total = self._need("total_steps")
        if self.dense_epochs is None:
            return total // 2
        step = round(self.dense_epochs * self._need("steps_per_epoch"))
        if step >= total:
            raise ValueError(
                f"asp: sparsity.dense_epochs={self.dense_epochs} leaves no sparse phase (the run "
                f"has {total} steps, {self.steps_per_epoch} per epoch); use fewer dense epochs"
            )
        return step

    def init_state(self) -> None:
        for _, m, state in self.items():  # apex's shape rule, held by the Eq. 1 rule
            state["mask"] = None
            state["skipped"] = bool(m.plan.rules[0].skips(m.plan, tuple(m.weight.shape)))
        if self.total_steps is not None and self.prune_step == 0:
            self.prune()

    def prune(self) -> None:
        for _, m, state in self.items():
            if not state["skipped"]:  # S(W) by the held_nm rule, with its mask_layout
                state["mask"] = m.plan.rules[0].one_shot_mask(m.weight.detach(), m.plan)

    def update(self) -> None:
        if self.step_count == self.prune_step:
            self.prune()
        for _, m, state in self.items():
            if state["mask"] is not None:
                m.weight.mul_(state["mask"])
