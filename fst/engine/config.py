"""The run-config schema and its validation (run before any model or data is built).

A run config is composed by Hydra from ``configs/config.yaml`` and its groups. Two kinds of group:

* **Fixed groups** (``trainer``, ``logger``, ``sparsity``, ``backend``, ``loss``): typed by the
  dataclasses below; an unknown key or a wrong type fails naming the valid keys.
* **Registry groups** (``model``, ``data``, ``optim``, ``sched``): ``name`` is a registry key
  (``fst.models.MODELS``, ``fst.data.DATASETS``, ``fst.engine.optim.OPTIMIZERS``/``SCHEDULERS``)
  and every other key is a keyword argument of that registered builder, checked against its
  signature (the model group's ``label``, its part of the default run name, apart). So a new model/dataset config file needs no schema edit: its builder is its schema.
  The data group also carries the loader keys the engine reads itself (``DATA_LOADER_KEYS``,
  ``fst.types.DataLoaderConfig``) and ``small_stem`` (read by the model group through
  interpolation); those are not passed on.

``validate_config`` also refuses values that would silently train something else than asked
(``epochs=0``, ``limit_train_batches=0``, a negative ``grad_clip_norm``, ``optim.lr<=0``, a
strategy option the chosen strategy ignores). Missing values (``???``) are reported by
``missing_keys`` once ``resume`` had the chance to fill them from the checkpoint.

``validate_config(cfg)`` raises ``ConfigError`` naming the offending key and the valid choices.
``normalize_overrides`` lets ``+experiment=NAME`` and ``experiment=NAME`` both work although
``experiment: null`` sits in the defaults list (Hydra itself only accepts the second form).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fst.registry import group_kwargs
from fst.types import DATA_LOADER_KEYS, MODEL_KEYS, ConfigError, DataLoaderConfig

__all__ = [
    "ConfigError",
    "DATA_LOADER_KEYS",
    "DataLoaderConfig",
    "TrainerConfig",
    "group_kwargs",
    "missing_keys",
    "normalize_overrides",
    "sparsity_options",
    "trainer_settings",
    "validate_config",
]

# Config groups that are selected with ``GROUP=NAME`` but which users habitually append with
# ``+GROUP=NAME``; both spellings are accepted.
OPTIONAL_GROUPS = ("experiment", "sweep")


#: ``trainer.keep_checkpoints`` choices (see ``fst.engine.checkpoint``).
KEEP_CHECKPOINTS = ("last_best", "last", "all")


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
    keep_checkpoints: str = "last_best"  # last_best | last | all (fst.engine.checkpoint)
    progress_bar: bool = True
    print_summary: bool = False
    skip_nonfinite: bool = False
    max_nonfinite_skips: int | None = None
    debug_signal_at_step: int | None = None
    debug_signal: str = "SIGTERM"
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


def check_overrides(overrides: Iterable[str]) -> None:
    """Refuse ``group.key=value`` overrides of a fixed group (``trainer``, ``logger``,
    ``backend``, ``loss``) whose schema has no such key, before Hydra composes: Hydra's own
    message ("Key 'epohcs' is not in struct ... To append to your config use +trainer.epohcs")
    suggests adding the misspelt key, which then fails later. Names the closest valid key."""
    import difflib

    for o in overrides:
        if "=" not in o or o.startswith(("+", "~", "-")):
            continue
        parts = o.split("=", 1)[0].split(".")
        if len(parts) < 2 or parts[0] not in FIXED_GROUPS:
            continue
        schema, where = FIXED_GROUPS[parts[0]], parts[0]
        for part in parts[1:]:
            names = [f.name for f in fields(schema)]
            if part not in names:
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"; did you mean {where}.{close[0]}?" if close else ""
                raise ConfigError(
                    f"unknown config key {'.'.join(parts)}{hint} Valid keys for {where}: "
                    f"{', '.join(sorted(names))}"
                )
            nested = {"wandb": WandbConfig}.get(part) if schema is LoggerConfig else None
            if nested is None:
                break
            schema, where = nested, f"{where}.{part}"


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
        raise _type_error(group, schema, node, e) from None


def _type_error(group: str, schema: type, node: Any, e: OmegaConfBaseException) -> ConfigError:
    """``trainer.epochs='three' is not a valid int; e.g. trainer.epochs=120`` from OmegaConf's
    validation error (which names neither the group nor the fix)."""
    import typing

    key = str(getattr(e, "full_key", "") or "")
    value = OmegaConf.select(node, key, throw_on_missing=False) if key else None
    typ, field_, hint = schema, None, ""
    for part in key.split(".") if key else []:
        if not dataclasses.is_dataclass(typ):
            field_ = None
            break
        hints = typing.get_type_hints(typ)
        field_ = next((f for f in fields(typ) if f.name == part), None)
        hint = hints.get(part)
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        typ = inner[0] if inner else hint
    if field_ is None:
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        return ConfigError(f"invalid {group} config at {key or group}: {msg}")
    tname = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    example = field_.default if field_.default is not MISSING else None
    if example is None and field_.default_factory is not MISSING:
        example = field_.default_factory()
    fix = f"; e.g. {group}.{key}={example}" if example not in (None, []) else ""
    return ConfigError(f"{group}.{key}={value!r} is not a valid {tname}{fix}")


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
    _check_keys("model", _group_keys(cfg, "model"), valid | set(MODEL_KEYS), open_)

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
    _check_values(cfg)


def _check_values(cfg: DictConfig) -> None:
    """Values of the right type that would silently train something else than asked."""
    tc = cfg.trainer

    def positive_int_or_null(key: str, what: str) -> None:
        v = OmegaConf.select(tc, key, throw_on_missing=False)
        if v is not None and int(v) < 1:
            raise ConfigError(f"trainer.{key}={v}: {what}")

    if int(tc.epochs) < 1:
        raise ConfigError(
            f"trainer.epochs={tc.epochs}: a run trains at least 1 epoch; to only evaluate a "
            "checkpoint use eval.py checkpoint=PATH"
        )
    positive_int_or_null(
        "limit_train_batches",
        "at least 1 optimizer step per epoch, or null for the whole training set",
    )
    positive_int_or_null(
        "limit_val_batches", "at least 1 validation batch, or null for the whole validation set"
    )
    positive_int_or_null("val_every_n_epochs", "validate every N >= 1 epochs")
    positive_int_or_null("log_every_n_steps", "log every N >= 1 optimizer steps")
    clip = tc.get("grad_clip_norm")
    if clip is not None and not float(clip) > 0:
        raise ConfigError(
            f"trainer.grad_clip_norm={clip}: the gradient norm is clipped to a positive value "
            "(e.g. 1.0); a value <= 0 would flip or zero every update. Use null for no clipping"
        )
    for key in ("checkpoint_every_n_steps", "diagnostics_every_n_steps"):
        node = tc if key.startswith("checkpoint") else cfg.get("logger", {})
        v = node.get(key) if node is not None else None
        if v is not None and int(v) < 0:
            raise ConfigError(f"{key}={v}: use N >= 1 steps, or 0 for never")
    keep = tc.get("keep_checkpoints", "last_best")
    if keep not in KEEP_CHECKPOINTS:
        raise ConfigError(
            f"trainer.keep_checkpoints={keep!r}; valid choices: {', '.join(KEEP_CHECKPOINTS)}"
        )
    if tc.get("debug_signal", "SIGTERM") not in ("SIGTERM", "SIGINT", "SIGUSR1"):
        raise ConfigError(
            f"trainer.debug_signal={tc.debug_signal!r}; valid choices: SIGTERM, SIGINT, SIGUSR1"
        )
    lr = OmegaConf.select(cfg, "optim.lr", throw_on_missing=False)
    if lr is not None and not float(lr) > 0:
        raise ConfigError(
            f"optim.lr={lr}: with a learning rate <= 0 the weights never improve; use a "
            "positive lr (the paper's recipe: optim.lr=0.1 for batch 256)"
        )


def missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is still ``???`` (mandatory, never set)."""
    out = []
    for k in cfg.keys():
        key = f"{prefix}{k}"
        if k == "hydra":
            continue
        if OmegaConf.is_missing(cfg, k):
            out.append(key)
            continue
        v = cfg.get(k)
        if isinstance(v, DictConfig):
            out += missing_keys(v, f"{key}.")
    return out


def trainer_settings(cfg: DictConfig) -> TrainerConfig:
    """The ``trainer`` group as a typed ``TrainerConfig`` (defaults filled in)."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg.trainer)
    return OmegaConf.to_object(merged)


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
    decay = cfg.sparsity.decay
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or decay < 0:
        raise ConfigError(
            f"sparsity.decay={decay!r}: the SR-STE decay is a number >= 0 (the paper: 2e-4; 0 "
            "turns it off)"
        )
    exclude = cfg.sparsity.exclude
    if exclude is None or isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude):
        raise ConfigError(
            f"sparsity.exclude must be a list of fnmatch patterns (e.g. [conv1, fc]), got {exclude!r}"
        )
    # Extra keys are strategy options, passed on as keyword arguments of fst.sparsify, and
    # the schedule parameters of the strategy's sparsifier (issue 12).
    valid, open_ = builder_params(fst.sparsify, skip=1)
    valid -= {"strategy", "backend", "decay", "exclude"}
    if open_:  # fst.sparsify(..., **options): the strategies declare their options
        from fst import strategies

        valid |= set(getattr(strategies, "OPTIONS", {}))
        open_ = not hasattr(strategies, "OPTIONS")
    valid |= _schedule_keys(cfg)
    _check_keys("sparsity", keys, valid | set(SPARSITY_KEYS), open_)
    _check_options_used(cfg)


def _check_options_used(cfg: DictConfig) -> None:
    """Strategy options are checked by the strategy itself (its GEMM rules say which options
    they read): an unknown option, or one the plan would silently ignore, is a ConfigError."""
    from fst.strategies import get_strategy

    try:
        get_strategy(str(cfg.sparsity.strategy), **sparsity_options(cfg))
    except ValueError as e:
        raise ConfigError(f"sparsity.{e}") from None
    except TypeError as e:
        raise ConfigError(f"sparsity: {e}") from None


def _schedule_keys(cfg: DictConfig) -> set[str]:
    """Schedule parameters of the configured strategy's sparsifier (none if stateless)."""
    from fst.sparsifier import schedule_params
    from fst.strategies import STRATEGIES

    key = STRATEGIES.get(cfg.sparsity.strategy).sparsifier
    return schedule_params(key) if key else set()


def sparsity_options(cfg: DictConfig) -> dict[str, Any]:
    """The sparsity group's strategy options (extra keys that are not schedule parameters) as
    plain keyword arguments of ``fst.sparsify``."""
    skip = set(SPARSITY_KEYS) | _schedule_keys(cfg)
    return {
        str(k): OmegaConf.to_object(v) if OmegaConf.is_config(v) else v
        for k, v in cfg.sparsity.items()
        if k not in skip
    }


def sparsifier_params(cfg: DictConfig) -> dict[str, Any]:
    """The sparsity group's schedule parameters of the strategy's sparsifier (issue 12)."""
    keys = _schedule_keys(cfg)
    return {str(k): v for k, v in cfg.sparsity.items() if k in keys}
