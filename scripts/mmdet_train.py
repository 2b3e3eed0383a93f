"""Train (and validate) an MMDetection config, e.g. one of ``configs/mmdet/``.

    python scripts/mmdet_train.py configs/mmdet/table4_faster-rcnn_r50_fpn_shapes_fst.py
    python scripts/mmdet_train.py CONFIG --work-dir outputs/mmdet/run1 --resume
    python scripts/mmdet_train.py CONFIG --cfg-options train_cfg.max_epochs=1

The same as mmdet's own ``tools/train.py`` for these configs (they load fst through
``custom_imports``); this copy exists because pip's mmdet has no ``tools/``. Needs
``bash scripts/install_mmdet.sh`` first. Writes to ``outputs/mmdet/<config name>/`` unless
``--work-dir`` is given; prints the last validation metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def require_mmdet() -> None:
    """Fail in one line if mmdet or a working mmcv.ops is missing."""
    try:
        import mmdet  # noqa: F401
        from mmcv.ops import nms  # noqa: F401
    except ImportError as e:
        sys.exit(f"error: MMDetection is not usable here ({e}); run: bash scripts/install_mmdet.sh")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config", help="an mmdet config file, e.g. configs/mmdet/*.py")
    p.add_argument("--work-dir", help="output folder (default: outputs/mmdet/<config name>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="resume from CHECKPOINT, or (no value) from the work dir's latest checkpoint",
    )
    p.add_argument("--amp", action="store_true", help="mixed precision (mmengine AmpOptimWrapper)")
    p.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config entries, e.g. train_cfg.max_epochs=1",
    )
    args = p.parse_args(argv)
    if not Path(args.config).is_file():
        sys.exit(f"error: config {args.config} does not exist; see configs/mmdet/")
    require_mmdet()
    from mmengine.config import Config, DictAction
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        parsed = argparse.ArgumentParser()
        parsed.add_argument("--o", nargs="+", action=DictAction)
        cfg.merge_from_dict(parsed.parse_args(["--o", *args.cfg_options]).o)
    cfg.work_dir = args.work_dir or str(Path("outputs") / "mmdet" / Path(args.config).stem)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    last: dict[str, float] = {}

    class LastMetrics(Hook):
        def after_val_epoch(self, runner, metrics=None):
            last.update({k: float(v) for k, v in (metrics or {}).items()})

    runner.register_hook(LastMetrics(), priority="LOWEST")
    runner.train()
    print(json.dumps(last, indent=1, sort_keys=True))
    return last


if __name__ == "__main__":
    main()
