"""The run-config schema and its validation (run before any model or data is built).

A run config is composed by Hydra from ``configs/config.yaml`` and its groups. Two kinds of group:

* **Fixed groups** (``trainer``, ``logger``, ``sparsity``, ``backend``, ``loss``): typed by the
  dataclasses below; an unknown key or a wrong type fails naming the valid keys.
* **Registry groups** (``model``, ``data``, ``optim``, ``sched``): ``name`` is a registry key
  (``fst.models.MODELS``, ``fst.data.DATASETS``, ``fst.engine.optim.OPTIMIZERS``/``SCHEDULERS``)
  and every other key is a keyword argument of that registered builder, checked against its
  signature. So a new model/dataset config file needs no schema edit: its builder is its schema.
  The data group also carries the loader keys the engine reads itself (``DATA_LOADER_KEYS``) and
  ``small_stem`` (read by the model group through interpolation); those are not passed on.

``validate_config(cfg)`` raises ``ConfigError`` naming the offending key and the valid choices.
``normalize_overrides`` lets ``+experiment=NAME`` and ``experiment=NAME`` both work although
``experiment: null`` sits in the defaults list (Hydra itself only accepts the second form).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Config groups that are selected with ``GROUP=NAME`` but which users habitually append with
# ``+GROUP=NAME``; both spellings are accepted.
OPTIONAL_GROUPS = ("experiment", "sweep")


class ConfigError(ValueError):
    """A run config names an unknown key, value or impossible setting."""


@dataclass
class TrainerConfig:
    epochs: int = 120
    accumulate_grad_batches: int = 1
    device: str = "auto"
    precision: str = "bf16"
    channels_last: bool = False
    sync_batchnorm: bool = False
    grad_clip_norm: float | None = None
    deterministic: bool = False
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    val_every_n_epochs: int = 1
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 0
    save_checkpoints: bool = True
    progress_bar: bool = True
    skip_nonfinite: bool = False
    max_nonfinite_skips: int | None = None
    debug_signal_at_step: int | None = None
    debug_nan_at_step: int | None = None
    compile: Any = False  # false | default | max-autotune (fst.compile)
    num_threads: int | None = None  # torch CPU threads; null: automatic (fst.threads)


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "fst"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig | None = None
    diagnostics_every_n_steps: int = 50


@dataclass
class BackendConfig:
    name: str = "native"


@dataclass
class LossConfig:
    label_smoothing: float = 0.0


@dataclass
class DataLoaderConfig:
    """Data-group keys the engine reads itself (the rest go to the dataset builder)."""

    name: str = "digits"
    batch_size: int = 64  # global: all processes x accumulation steps
    val_batch_size: int | None = None  # per evaluation batch; null: batch_size
    num_workers: int = 0
    pin_memory: bool = False
    small_stem: bool = False  # read by model configs (${data.small_stem})


DATA_LOADER_KEYS = tuple(f.name for f in fields(DataLoaderConfig))
FIXED_GROUPS: dict[str, type] = {
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "backend": BackendConfig,
    "loss": LossConfig,
}
SPARSITY_KEYS = ("strategy", "decay", "exclude")
TOP_LEVEL_KEYS = (
    "task",
    "name",
    "seed",
    "resume",
    "output_root",
    "model",
    "data",
    "sparsity",
    "backend",
    "optim",
    "sched",
    "logger",
    "trainer",
    "loss",
    "hydra",
)
PRECISIONS = ("bf16", "16", "32")
WANDB_MODES = ("offline", "online", "disabled")


def normalize_overrides(overrides: Iterable[str]) -> list[str]:
    """Rewrite ``+experiment=X``/``+sweep=X`` as ``experiment=X``/``sweep=X``.

    ``configs/config.yaml`` lists ``experiment: null`` (and ``sweep: null``) in its defaults, so
    Hydra accepts ``experiment=X`` but rejects ``+experiment=X`` ("Multiple values"); our users
    type the latter (lightning-hydra-template habit), so both must work.
    """
    out = []
    for o in overrides:
        for g in OPTIONAL_GROUPS:
            if o.startswith(f"+{g}="):
                o = o[1:]
        out.append(o)
    return out


def builder_params(fn: Callable, skip: int = 0) -> tuple[set[str], bool]:
    """Keyword parameters of ``fn`` (after the first ``skip`` positional ones) and whether it
    takes ``**kwargs`` (then any key is accepted)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    names = {
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")
    }
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_keys(where: str, keys: Iterable[str], valid: set[str], open_ended: bool = False) -> None:
    if open_ended:
        return
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise ConfigError(
            f"unknown config key {where}.{unknown[0]}"
            + (f" (and {', '.join(unknown[1:])})" if unknown[1:] else "")
            + f"; valid keys for {where}: {', '.join(sorted(valid))}"
        )


def _check_fixed(cfg: DictConfig, group: str, schema: type) -> None:
    node = cfg.get(group)
    if node is None:
        raise ConfigError(f"config group {group!r} is missing (add it to the defaults list)")
    _check_keys(group, _group_keys(cfg, group), {f.name for f in fields(schema)})
    if group == "logger" and isinstance(node.get("wandb"), DictConfig):
        _check_keys(
            "logger.wandb", [str(k) for k in node.wandb], {f.name for f in fields(WandbConfig)}
        )
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid {group} config: {e.msg if hasattr(e, 'msg') else e}") from None


def _check_choice(where: str, value: Any, registry) -> Any:
    if value not in registry:
        raise ConfigError(
            f"unknown {registry.kind} {value!r} at {where}; valid choices: "
            f"{', '.join(sorted(registry))}"
        )
    return registry.get(value)


def _group_keys(cfg: DictConfig, group: str) -> list[str]:
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config group {group!r} is missing or not a mapping")
    return [str(k) for k in node.keys()]


def validate_config(cfg: DictConfig) -> None:
    """Check ``cfg`` against the schema and the registries; raise ``ConfigError`` on the first
    problem (unknown key, wrong type, unknown registry key, unknown builder argument)."""
    from fst.data import DATASETS
    from fst.engine.optim import OPTIMIZERS, SCHEDULERS
    from fst.models import MODELS
    from fst.tasks import TASKS

    _check_keys("<root>", [str(k) for k in cfg.keys()], set(TOP_LEVEL_KEYS))
    for key in ("task", "model", "data", "sparsity", "backend", "optim", "sched", "trainer"):
        if key not in cfg:
            raise ConfigError(f"config key {key!r} is missing")
    _check_choice("task", cfg.task, TASKS)
    for group, schema in FIXED_GROUPS.items():
        _check_fixed(cfg, group, schema)
    if str(cfg.trainer.precision) not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision!r}; valid choices: {', '.join(PRECISIONS)}"
        )
    _check_compile(cfg.trainer.get("compile", False))
    if cfg.logger.get("wandb") is not None and cfg.logger.wandb.mode not in WANDB_MODES:
        raise ConfigError(
            f"logger.wandb.mode={cfg.logger.wandb.mode!r}; valid choices: {', '.join(WANDB_MODES)}"
        )

    # Registry groups: name is a key, other keys are the builder's keyword arguments.
    builder = _check_choice("model.name", cfg.model.name, MODELS)
    valid, open_ = builder_params(builder)
    _check_keys("model", _group_keys(cfg, "model"), valid | {"name"}, open_)

    builder = _check_choice("data.name", cfg.data.name, DATASETS)
    valid, open_ = builder_params(builder)
    _check_keys("data", _group_keys(cfg, "data"), valid | set(DATA_LOADER_KEYS), open_)
    loader_part = {k: cfg.data[k] for k in DATA_LOADER_KEYS if k in cfg.data}
    try:
        OmegaConf.merge(OmegaConf.structured(DataLoaderConfig), loader_part)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid data config: {e}") from None

    builder = _check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    valid, open_ = builder_params(builder, skip=1)
    _check_keys("optim", _group_keys(cfg, "optim"), valid | {"name"}, open_)
    builder = _check_choice("sched.name", cfg.sched.name, SCHEDULERS)
    valid, open_ = builder_params(builder, skip=1)
    valid -= {"total_steps", "steps_per_epoch"}  # supplied by the engine
    _check_keys("sched", _group_keys(cfg, "sched"), valid | {"name"}, open_)

    _check_sparsity(cfg)


def _check_compile(value: Any) -> None:
    from fst.compile import compile_mode

    try:
        compile_mode(value)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_sparsity(cfg: DictConfig) -> None:
    import fst
    from fst.ops import BACKENDS
    from fst.strategies import STRATEGIES

    keys = _group_keys(cfg, "sparsity")
    for k in SPARSITY_KEYS:
        if k not in keys:
            raise ConfigError(
                f"sparsity.{k} is missing (sparsity group keys: strategy, decay, exclude)"
            )
    _check_choice("sparsity.strategy", cfg.sparsity.strategy, STRATEGIES)
    _check_choice("backend.name", cfg.backend.name, BACKENDS)
    if not isinstance(cfg.sparsity.decay, (int, float)):
        raise ConfigError(f"sparsity.decay must be a number, got {cfg.sparsity.decay!r}")
    exclude = cfg.sparsity.exclude
    if exclude is None or isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude):
        raise ConfigError(
            f"sparsity.exclude must be a list of fnmatch patterns (e.g. [conv1, fc]), got {exclude!r}"
        )
    # Extra keys are strategy options, passed on as keyword arguments of fst.sparsify.
    valid, open_ = builder_params(fst.sparsify, skip=1)
    valid -= {"strategy", "backend", "decay", "exclude"}
    if open_:  # fst.sparsify(..., **options): the strategies declare their options
        from fst import strategies

        valid |= set(getattr(strategies, "OPTIONS", {}))
        open_ = not hasattr(strategies, "OPTIONS")
    _check_keys("sparsity", keys, valid | set(SPARSITY_KEYS), open_)


def sparsity_options(cfg: DictConfig) -> dict[str, Any]:
    """The sparsity group's extra keys (strategy options) as plain keyword arguments."""
    return {
        str(k): OmegaConf.to_object(v) if OmegaConf.is_config(v) else v
        for k, v in cfg.sparsity.items()
        if k not in SPARSITY_KEYS
    }


def group_kwargs(node: DictConfig, drop: Iterable[str] = ("name",)) -> dict[str, Any]:
    """A config group as builder keyword arguments: resolved, plain Python, ``drop`` removed."""
    d = OmegaConf.to_container(node, resolve=True)
    for k in drop:
        d.pop(k, None)
    return d
