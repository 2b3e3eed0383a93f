"""Train a model: ``python train.py [+experiment=NAME] [group=option] [key=value ...]``.

Plain ``python train.py`` trains FST ResNet-18 on the embedded digits data (no download).
See README.md for the paper's experiments, sweeps (``-m +sweep=table5``), DDP and SLURM.
"""

import sys

import hydra
from omegaconf import DictConfig

from fst.engine.config import normalize_overrides  # noqa: E402

sys.argv = normalize_overrides(sys.argv)  # `+experiment=X` and `experiment=X` both work


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from fst.engine.training import train
    from fst.threads import configure_threads

    configure_threads(cfg.trainer.get("num_threads"))

    summary = train(cfg)
    pm = summary["primary_metric"]
    value, best = summary.get(f"val/{pm}"), summary.get(f"best/val/{pm}")
    if value is None:
        print(f"no validation metrics; run dir: {summary['run_dir']}")
    else:
        print(
            f"final val/{pm}: {value:.2f} (best {best:.2f} at epoch {summary['best_epoch']}); "
            f"run dir: {summary['run_dir']}"
        )
    return value


if __name__ == "__main__":
    main()
