"""fst inside MMDetection: an mmengine hook, the embedded ``shapes`` set, the SSD predict fix.

An mmdet config opts in with two lines (``configs/mmdet/`` has the Table 4 rows)::

    custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)
    custom_hooks = [dict(type="FSTSparsifyHook", strategy="fst", backend="native",
                         exclude=[...], decay=2e-4)]

:class:`FSTSparsifyHook` then

- sparsifies the model in place before the run (``fst.sparsify``: every ``nn.Conv2d`` with
  groups=1 and every ``nn.Linear`` becomes 2:4 sparse in the strategy's GEMMs; parameters keep
  their identity, so the optimizer mmengine built already holds the right tensors, and
  checkpoints stay loadable into the dense model);
- for a strategy that keeps state across steps (``rigl``, ``dpf``, ``asp``, ...) builds its
  sparsifier (``fst.build_sparsifier``) with mmengine's optimizer and schedule length, steps it
  right after every optimizer step that was taken, before the gradients are zeroed (not while
  gradients accumulate, not after a step the AMP loss scaler skipped), and saves / restores it
  in mmengine's checkpoints
  (``checkpoint["fst_sparsifier"]``);
- logs ``fst.summary`` (one row per layer) once, and every ``diag_interval`` iterations fst's
  per-layer 2:4 diagnostics (:class:`fst.logging.sparsity.MaskTracker`): the means go to the
  message hub (``train/sparsity/*``, so mmengine's log line and visualizer backends show them),
  the per-layer values to mmengine's logger.

DDP / FSDP-style wrappers are unwrapped (``model.module``). Strategy names, options and their
errors are fst's own (an unknown strategy lists the valid ones), raised when the hook is built.

Importing this module needs mmdet and mmengine; ``import fst`` does not.
"""

from __future__ import annotations

from typing import Any

import torch
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS, HOOKS
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from torch import nn

from fst.convert import sparsify, summary
from fst.data.detection import SHAPE_CLASSES, shapes_dir, shapes_params
from fst.layers import sparse_layers
from fst.logging.sparsity import MaskTracker
from fst.ops import BACKENDS
from fst.rules import weight_operands
from fst.sparsifier import build_sparsifier, restore_sparsifier
from fst.strategies import get_strategy

__all__ = ["FSTSparsifyHook", "SSDPredictFixHook", "FSTShapesDataset", "fix_ssd_predict"]

CHECKPOINT_KEY = "fst_sparsifier"


def _unwrap(model: nn.Module) -> nn.Module:
    """The detector inside mmengine's DDP / FSDP wrappers (``model.module``)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def fix_ssd_predict(model: nn.Module) -> int:
    """Work around mmdet's ``AttributeError: 'SSDHead' object has no attribute 'loss_cls'``
    at predict time (open-mmlab/mmdetection#11305): ``SSDHead.__init__`` skips
    ``AnchorHead.__init__`` and builds no ``loss_cls`` (its loss is written out in
    ``loss_by_feat``), but ``BaseDenseHead._predict_by_feat_single`` reads
    ``self.loss_cls.custom_cls_channels``. Give such heads ``loss_cls = None`` (read as "no custom
    channels"), which is what the predict path needs; training is unaffected. Returns how many
    heads were fixed."""
    from mmdet.models.dense_heads import SSDHead

    fixed = 0
    for m in model.modules():
        if isinstance(m, SSDHead) and not hasattr(m, "loss_cls"):
            m.loss_cls = None
            fixed += 1
    return fixed


@HOOKS.register_module(force=True)  # force: a re-import (reload) replaces, not fails
class SSDPredictFixHook(Hook):
    """Applies :func:`fix_ssd_predict` before a run: for SSD configs without
    :class:`FSTSparsifyHook` (the dense rows), which applies it itself."""

    def before_run(self, runner) -> None:
        fix_ssd_predict(_unwrap(runner.model))


@HOOKS.register_module(force=True)  # force: a re-import (reload) replaces, not fails
class FSTSparsifyHook(Hook):
    """Sparsify an mmengine model with fst and keep its sparsifier in step (module docstring).

    Args:
        strategy: a key of ``fst.STRATEGIES`` (``fst``, ``srste``, ``rigl``, ``dense``, ...).
        backend: a key of ``fst.BACKENDS`` (``native``, ``reference``, ``sparse24``).
        exclude: fnmatch patterns on module names kept dense (``"backbone.conv1"``,
            ``"*.fc_cls"``); a pattern matching no layer is an error.
        decay: SR-STE decay coefficient (Eq. 6).
        schedule: the sparsifier's schedule parameters (``configs/sparsity/<strategy>.yaml``,
            e.g. ``dict(update_every=100)`` for rigl); an error for a stateless strategy.
        diag_interval: iterations between per-layer diagnostics (0: only at the end).
        seed: seeds the sparsifier's own generator.
        **options: strategy options (``ir_coef``, ``x_pattern``, ...; ``fst.strategies.OPTIONS``).
    """

    priority = "ABOVE_NORMAL"  # before the CheckpointHook saves, after the optimizer steps

    def __init__(
        self,
        strategy: str = "fst",
        backend: str = "native",
        exclude: list[str] | tuple[str, ...] = (),
        decay: float = 2e-4,
        schedule: dict[str, Any] | None = None,
        diag_interval: int = 500,
        seed: int = 0,
        **options,
    ):
        get_strategy(strategy, **options)  # fst's own errors, when the config is built
        BACKENDS.get(backend)
        self.strategy, self.backend = strategy, backend
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        self.decay, self.options = float(decay), dict(options)
        self.schedule = dict(schedule or {})
        self.diag_interval, self.seed = int(diag_interval), int(seed)
        self.sparsifier = None
        self.tracker = MaskTracker()
        self._saved: dict[str, Any] | None = None  # sparsifier state loaded before it is built
        self._converted = False

    # ---------------------------------------------------------------- conversion
    def before_run(self, runner) -> None:
        if self._converted:  # runner.val() after runner.train(): keep the layers' state
            return
        self._converted = True
        model = _unwrap(runner.model)
        sparsify(
            model,
            self.strategy,
            self.backend,
            decay=self.decay,
            exclude=self.exclude,
            **self.options,
        )
        fix_ssd_predict(model)
        runner.logger.info(
            f"fst: sparsified with strategy={self.strategy!r} backend={self.backend!r}; "
            f"{summary(model).headline()}\n{summary(model)}"
        )

    def before_train(self, runner) -> None:
        # After mmengine's weight init and resume (which may already have delivered the state).
        model = _unwrap(runner.model)
        optimizer = (
            runner.optim_wrapper.optimizer
            if isinstance(runner.optim_wrapper, OptimWrapper)
            else None
        )
        loop = runner.train_loop
        per_epoch = len(loop.dataloader) if hasattr(loop, "dataloader") else None
        self.sparsifier = build_sparsifier(
            model,
            optimizer,
            total_steps=runner.max_iters,
            steps_per_epoch=per_epoch,
            seed=self.seed,
            **self.schedule,
        )
        if self.sparsifier is not None and self._saved is not None:
            self.sparsifier.load_state_dict(self._saved)
            runner.logger.info(f"fst: restored {self.sparsifier} from the checkpoint")
        self._saved = None
        if self.sparsifier is not None:
            self._step_with_optimizer(runner.optim_wrapper)

    def _ensure_for_eval(self, runner) -> None:
        """A val/test-only run: attach the saved per-layer state (masks) for evaluation."""
        if self.sparsifier is None:
            self.sparsifier = restore_sparsifier(_unwrap(runner.model), self._saved, "(mmengine)")

    def before_val(self, runner) -> None:
        self._ensure_for_eval(runner)

    def before_test(self, runner) -> None:
        self._ensure_for_eval(runner)

    # ---------------------------------------------------------------- stepping
    def _step_with_optimizer(self, optim_wrapper) -> None:
        """Step the sparsifier inside ``optim_wrapper.step``: mmengine's ``update_params`` zeroes
        the gradients right after the optimizer step, and RigL grows by those gradients. The
        wrapper calls ``step`` only on an update iteration (not while gradients accumulate); an
        AMP loss scaler lowers its scale exactly when it skipped a non-finite step, and then the
        sparsifier does not step either."""
        original = optim_wrapper.step

        def step(*args, **kwargs):
            scaler = getattr(optim_wrapper, "loss_scaler", None)
            before = float(scaler.get_scale()) if scaler is not None else None
            out = original(*args, **kwargs)
            if before is None or float(scaler.get_scale()) >= before:
                self.sparsifier.step()
            return out

        optim_wrapper.step = step

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.diag_interval > 0 and self.every_n_train_iters(runner, self.diag_interval):
            self._log_diagnostics(runner)

    def after_train(self, runner) -> None:
        self._log_diagnostics(runner)

    def _log_diagnostics(self, runner) -> None:
        model = _unwrap(runner.model)
        if not any(True for _ in sparse_layers(model)):
            return
        values = self.tracker.measure(model)
        layers = {}
        for key, v in values.items():
            parts = key.split("/")
            if len(parts) == 3:  # sparsity/<layer>/<metric>
                layers.setdefault(parts[1], []).append(f"{parts[2]}={v:.4g}")
            else:
                runner.message_hub.update_scalar(f"train/{key}", v)
        means = ", ".join(
            f"{k.split('/')[1]}={v:.4g}" for k, v in values.items() if k.count("/") == 1
        )
        lines = [f"  {name}: {', '.join(vals)}" for name, vals in layers.items()]
        runner.logger.info(
            f"fst diagnostics at iter {runner.iter}: {means}; step "
            f"{self.sparsifier.step_count if self.sparsifier else '-'} of the sparsifier\n"
            + "\n".join(lines)
        )

    # ---------------------------------------------------------------- checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault("meta", {})
        meta["fst"] = dict(strategy=self.strategy, backend=self.backend, **self.options)
        if self.sparsifier is not None:
            checkpoint[CHECKPOINT_KEY] = self.sparsifier.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        if self.sparsifier is not None:
            self.sparsifier.load_state_dict(saved)
        else:
            self._saved = saved  # the sparsifier is built in before_train / before_test


@DATASETS.register_module(force=True)
class FSTShapesDataset(CocoDataset):
    """fst's embedded detection set (``data=shapes``) as an mmdet COCO dataset, no download.

    The images and ``annotations/instances_{train,val}.json`` are written on first use by
    :func:`fst.data.detection.shapes_dir` (same folder as ``data=shapes``); everything else is
    ``CocoDataset`` (``pipeline``, ``filter_cfg``, ...). Give ``CocoMetric`` ``ann_file=None``:
    it then scores against this dataset's own ground truth.

    Args:
        split: ``"train"`` or ``"val"``.
        root, and the shapes parameters (``fst.data.detection.SHAPES_PARAMS``: ``num_train``,
            ``image_size``, ...): as ``configs/data/shapes.yaml``, with ``data=shapes``'s
            defaults.
    """

    METAINFO = {
        "classes": SHAPE_CLASSES,
        "palette": [(220, 20, 60), (0, 128, 255), (0, 170, 0), (255, 160, 0)],
    }

    def __init__(self, split: str = "train", root: str | None = None, **kwargs):
        if split not in ("train", "val"):
            raise ValueError(f"FSTShapesDataset: split must be 'train' or 'val', got {split!r}")
        d = shapes_dir(root, **shapes_params(kwargs))  # the rest of kwargs is CocoDataset's
        super().__init__(
            data_root=str(d),
            ann_file=f"annotations/instances_{split}.json",
            data_prefix=dict(img=f"{split}/"),
            **kwargs,
        )


def forward_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight each sparse layer multiplies in its forward GEMM (Eq. 1), by layer name."""
    out = {}
    for name, m in sparse_layers(_unwrap(model)):
        w = weight_operands(m.weight.detach(), m.plan, state=m.rule_state)[0]
        out[name] = w
    return out
