"""ReSprop's state: the previous step's sampled output gradient, per conv layer.

The rules (:mod:`fst.rules.resprop`, which cites the paper and release) write this step's
chosen example of dY to ``state["next"]``; after the optimizer step this sparsifier makes it
``state["prev"]`` (the gradient the next step reuses) and draws which example the next step
keeps (``state["pick"]``, uniform in [0, 1), scaled to the batch by the rules). A skipped
(non-finite) step is not stepped, so its gradient is never reused.
"""

from __future__ import annotations

from fst.sparsifier.base import Sparsifier, register


@register
class ReSprop(Sparsifier):
    """Commits each step's sampled dY for reuse in the next (no schedule parameters)."""

    key = "resprop"
    provides = ("prev", "next", "pick")

    def __init__(self, model, optimizer=None, *, total_steps=None, steps_per_epoch=None, seed=0):
        super().__init__(
            model, optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, seed=seed
        )

    def init_state(self) -> None:
        for _, _, state in self.items():
            state["pick"] = self.uniform()

    def update(self) -> None:
        for _, _, state in self.items():
            if "next" in state:
                state["prev"] = state.pop("next")
            state["pick"] = self.uniform()
