"""Train a model: ``python train.py [+experiment=NAME] [group=option] [key=value ...]``.

Plain ``python train.py`` trains FST ResNet-18 on the embedded digits data (no download).
See README.md for the paper's experiments, sweeps (``-m +sweep=table5``), DDP and SLURM.
Exit status: 0 finished, 1 failed (the message names the cause and the fix), 75 preempted
(``last.pt`` written; continue with ``resume=auto``; before training: nothing written, run the
command again), 130 interrupted by Ctrl-C (likewise).
"""

import os
import signal
import sys


def _early_signal(signum, frame):  # until fst is imported (seconds): see fst.engine.faults
    # Nothing is written yet, so leave at once: an exception raised here would unwind through
    # whatever import is running (numpy's can then fail with a RecursionError and exit 1).
    code = 130 if signum == signal.SIGINT else 75
    os.write(2, f"fst: received signal {signum} while starting; exiting with {code}\n".encode())
    os._exit(code)


for _s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT):
    signal.signal(_s, _early_signal)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

# --help prints Hydra's help template (configs/hydra/help/fst.yaml): no torch import needed.
HELP = any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:])
if not HELP:
    from fst.engine.cli import run_cli
    from fst.engine.config import check_overrides, normalize_overrides
    from fst.engine.faults import install_startup_handlers
    from fst.engine.launch import check_command

    install_startup_handlers()
    sys.stdout.reconfigure(errors="backslashreplace")  # non-UTF-8 file names in log lines
    sys.argv = normalize_overrides(sys.argv)  # `+experiment=X` and `experiment=X` both work
    # Every config mistake is one line, before Hydra creates the run directory.
    run_cli(check_overrides, sys.argv[1:])
    run_cli(check_command, "config", sys.argv[1:])


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not at the top: `train.py --help` runs without torch (see HELP above).
    from fst.engine.cli import run_cli
    from fst.engine.training import train
    from fst.threads import configure_threads

    run_cli(configure_threads, cfg.trainer.get("num_threads"))
    summary = run_cli(train, cfg)  # rank 0 logs the result line ("final val/top1: ...")
    return summary.get(f"val/{summary['primary_metric']}")


if __name__ == "__main__":
    main()
