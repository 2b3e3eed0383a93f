"""Evaluate a checkpoint: ``python eval.py checkpoint=PATH [data=... data.root=...] [export=OUT]``.

Prints and writes the metrics, checks that every pruned layer's weights are 2:4 (exit status 1
if not) and optionally exports a state_dict with the 2:4 weights applied. See configs/eval.yaml.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from fst.engine.evaluation import evaluate_checkpoint
    from fst.threads import configure_threads

    configure_threads(cfg.get("num_threads"))

    result = evaluate_checkpoint(cfg, out_dir=HydraConfig.get().runtime.output_dir)
    for k, v in result.items():
        if k.startswith("val/") or k in ("nm_ok", "nm_layers_checked", "export", "output"):
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    if result.get("nm_ok") is False:
        print(f"NOT 2:4: {', '.join(result['nm_failures'])}", file=sys.stderr)
        sys.exit(1)
    return next((v for k, v in result.items() if k.startswith("val/")), None)


if __name__ == "__main__":
    main()
