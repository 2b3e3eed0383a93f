"""Evaluate a checkpoint: ``python eval.py checkpoint=PATH [data=... data.root=...] [export=OUT]``.

``checkpoint=`` is a checkpoint file or a run directory (its best.pt, else last.pt). Prints and
writes the metrics, checks the 2:4 weights as stored (exit status 1 if a layer is not 2:4; see
``fst/engine/evaluation.py`` for what is checked) and optionally exports a state_dict with the
2:4 weights applied. ``weights=FILE`` evaluates and checks FILE (e.g. an export) with the model
of ``checkpoint=``. See configs/eval.yaml.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from fst.engine.cli import run_cli
    from fst.engine.evaluation import run_eval
    from fst.threads import configure_threads

    configure_threads(cfg.get("num_threads"))

    result = run_cli(run_eval, cfg, out_dir=HydraConfig.get().runtime.output_dir)
    return next((v for k, v in result.items() if k.startswith("val/")), None)


if __name__ == "__main__":
    main()
