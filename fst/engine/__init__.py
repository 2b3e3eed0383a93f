"""The training engine. ``train(cfg)`` (``training.py``) builds a run once, config -> parts ->
``Trainer`` (``trainer.py``: the one loop and evaluation), and ``eval.py`` runs
``evaluation.py``. Beside them: config schema and checks (``config.py``, ``validate.py``),
resume policy (``resume.py``), run directories (``rundir.py``), checkpoints (``checkpoint.py``),
faults (``faults.py``: signals, non-finite values), optimizers and schedules (``optim.py``),
resumable sampling (``sampler.py``), distributed helpers (``dist.py``), the CLI's error handling
(``cli.py``) and the run record shared by summaries, checkpoints and eval (``record.py``).

Kept import-light: submodules are imported where used.
"""
