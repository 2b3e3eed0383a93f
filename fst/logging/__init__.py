"""Run logging: a local ``metrics.jsonl`` (always) plus W&B (offline by default).

``RunLogger`` is the one object the engine talks to; only rank 0 writes anything.
"""

from .run import RunLogger
from .sparsity import MaskTracker

__all__ = ["RunLogger", "MaskTracker"]
