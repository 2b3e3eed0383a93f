"""Train a model: ``python train.py [+experiment=NAME] [group=option] [key=value ...]``.

Plain ``python train.py`` trains FST ResNet-18 on the embedded digits data (no download).
See README.md for the paper's experiments, sweeps (``-m +sweep=table5``), DDP and SLURM.
Exit status: 0 finished, 1 failed (the message names the cause and the fix), 75 preempted
(``last.pt`` written; continue with ``resume=auto``), 130 interrupted by Ctrl-C (likewise).
"""

import sys

import hydra
from omegaconf import DictConfig

# --help prints Hydra's help template (configs/hydra/help/fst.yaml): no torch import needed.
HELP = any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:])
if not HELP:
    from fst.engine.cli import run_cli
    from fst.engine.config import check_overrides, normalize_overrides

    sys.argv = normalize_overrides(sys.argv)  # `+experiment=X` and `experiment=X` both work
    # A misspelt trainer/logger key: the closest valid key, no traceback.
    run_cli(check_overrides, sys.argv[1:])


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from fst.engine.cli import run_cli
    from fst.engine.training import train
    from fst.threads import configure_threads

    configure_threads(cfg.trainer.get("num_threads"))

    summary = run_cli(train, cfg)  # rank 0 logs the result line ("final val/top1: ...")
    return summary.get(f"val/{summary['primary_metric']}")


if __name__ == "__main__":
    main()
