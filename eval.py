"""Evaluate a checkpoint: ``python eval.py checkpoint=PATH [data=... data.root=...] [export=OUT]``.

``checkpoint=`` is a checkpoint file or a run directory (its best.pt, else last.pt). Prints and
writes the metrics, checks the 2:4 weights as stored (exit status 1 if a layer is not 2:4; see
``fst/engine/evaluation.py`` for what is checked) and optionally exports a state_dict with the
2:4 weights applied. ``weights=FILE`` evaluates and checks FILE (e.g. an export) with the model
of ``checkpoint=``. Metrics go to ``outputs/eval/<date>_<time>/eval_metrics.json`` (a new
directory per evaluation) or ``output=``; eval.py never writes into a run. See configs/eval.yaml.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fst.engine.cli import run_cli
from fst.engine.evaluation import run_eval
from fst.engine.faults import install_startup_handlers
from fst.engine.launch import check_command
from fst.threads import configure_threads

install_startup_handlers()
sys.stdout.reconfigure(errors="backslashreplace")  # non-UTF-8 file names in log lines
run_cli(check_command, "eval", sys.argv[1:])  # one line per mistake, before Hydra's directory


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_cli(configure_threads, cfg.get("num_threads"))

    result = run_cli(run_eval, cfg, out_dir=HydraConfig.get().runtime.output_dir)
    return next((v for k, v in result.items() if k.startswith("val/")), None)


if __name__ == "__main__":
    main()
