"""The training engine: one loop (``loop.py``), run setup (``runner.py``), optimizers and
schedules (``optim.py``), config schema (``config.py``), distributed helpers (``dist.py``),
resumable sampling (``sampler.py``), checkpoints (``checkpoint.py``), faults (``faults.py``).

Kept import-light: submodules are imported where used.
"""
