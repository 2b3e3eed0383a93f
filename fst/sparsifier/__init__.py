"""Sparsifiers: masks and gradients that live across training steps (see :mod:`.base`).

``SPARSIFIERS[key]`` is the class a strategy names in ``Strategy.sparsifier``:

- ``dpf``: magnitude mask of the dense W recomputed every 16 steps, gradual schedule.
- ``rigl``: random sparse start, drop by magnitude / grow by dense gradient every 100 steps.
- ``asfp``: lowest-L2 filters zeroed in W at every epoch end, asymptotically rising rate.
- ``asp``: dense phase, one-shot 2:4 magnitude mask, then that fixed mask.
- ``resprop``: the previous step's sampled output gradient, for reuse.

``fst.build_sparsifier(model, optimizer, total_steps=..., steps_per_epoch=..., **schedule)``
builds the one a sparsified model's strategy needs (None for stateless strategies).
"""

from fst.sparsifier import asfp, asp, dpf, resprop, rigl  # noqa: F401  (fill SPARSIFIERS)
from fst.sparsifier.base import (
    SPARSIFIERS,
    Sparsifier,
    build_sparsifier,
    restore_sparsifier,
    schedule_params,
)

__all__ = ["SPARSIFIERS", "Sparsifier", "build_sparsifier", "restore_sparsifier", "schedule_params"]
