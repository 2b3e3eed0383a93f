"""The run config: checked and typed once, at the top (``resolve_config``), before anything is
built; everything below (``build_parts``, the ``Trainer``, evaluation) receives the typed
``RunConfig``, never the raw ``DictConfig``.

A run config is composed by Hydra from ``configs/config.yaml`` and its groups. Two kinds of group:

* **Fixed groups** (``trainer``, ``logger``, ``loss``): typed by the dataclasses below, the one
  definition of each key's default (``configs/trainer/default.yaml`` etc. agree with them,
  ``tests/configs/test_defaults.py``); an unknown key or a wrong type fails naming the valid keys.
  ``sparsity`` is fixed too: ``strategy``, ``decay``, ``exclude``, and flat extra keys that the
  typed ``SparsityConfig`` separates into strategy options and the strategy's sparsifier
  schedule.
* **Registry groups** (``model``, ``data``, ``optim``, ``sched``, ``backend``): ``name`` is a
  registry key (``fst.models.MODELS``, ``fst.data.DATASETS``, ``fst.engine.optim.OPTIMIZERS``/
  ``SCHEDULERS``, ``fst.ops.BACKENDS``) and every other key is a keyword argument of that
  registered builder, checked against its signature (the model group's ``label``, its part of
  the default run name, apart; a backend's keys are checked by ``fst.ops.build_backend``). So a
  new model/dataset config file needs no schema edit: its builder is its schema.
  The data group also carries the loader keys the engine reads itself (``DATA_LOADER_KEYS``,
  ``fst.types.DataLoaderConfig``) and ``small_stem`` (read by the model group through
  interpolation); those are not passed on.

``resolve_config`` also refuses values that would silently train something else than asked
(``epochs=0``, ``limit_train_batches=0``, a negative ``grad_clip_norm``, ``optim.lr<=0``, a
strategy option the chosen strategy ignores). Missing values (``???``) are reported by
``missing_keys`` once ``resume`` had the chance to fill them from the checkpoint.

Types and ranges (issue 27), one place for every value: ``check_types`` checks each key of the
registry groups against its builder's annotation (``data.image_size=sixteen`` is not an int) and
``seed``; ``check_ranges`` checks every number of every group against ``RANGES`` (by key, e.g.
``loss.label_smoothing`` in [0, 1), ``sched.min_lr`` >= 0, ``data.batch_size`` >= 1, ``seed`` in
0..2**32-1), and any number not listed against ``DEFAULT_RANGE`` (>= 0: no setting of fst takes
a negative value). ``fst.engine.launch`` runs all of this before Hydra creates a directory.

``resolve_config(cfg)`` raises ``ConfigError`` naming the offending key and the valid choices
(``validate_config`` is the same check, for callers that only validate).
``normalize_overrides`` lets ``+experiment=NAME`` and ``experiment=NAME`` both work although
``experiment: null`` sits in the defaults list (Hydra itself only accepts the second form).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from fst.compile import compile_mode
from fst.data import DATASETS
from fst.engine.optim import OPTIMIZERS, SCHEDULERS
from fst.models import MODELS
from fst.ops import BACKENDS, Backend, build_backend
from fst.registry import group_kwargs
from fst.sparsifier import schedule_params
from fst.strategies import OPTIONS, STRATEGIES, Strategy, get_strategy
from fst.tasks import TASKS
from fst.types import DATA_LOADER_KEYS, MODEL_KEYS, ConfigError, DataLoaderConfig

__all__ = [
    "ConfigError",
    "DATA_LOADER_KEYS",
    "DataLoaderConfig",
    "GroupConfig",
    "RunConfig",
    "SparsityConfig",
    "TrainerConfig",
    "group_kwargs",
    "missing_keys",
    "normalize_overrides",
    "resolve_config",
    "validate_config",
]

# Config groups that are selected with ``GROUP=NAME`` but which users habitually append with
# ``+GROUP=NAME``; both spellings are accepted.
OPTIONAL_GROUPS = ("experiment", "sweep")


#: ``trainer.keep_checkpoints`` choices (see ``fst.engine.checkpoint``).
KEEP_CHECKPOINTS = ("last_best", "last", "all")
PRECISIONS = ("bf16", "16", "32")
WANDB_MODES = ("offline", "online", "disabled")
DEBUG_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGHUP")


@dataclass
class TrainerConfig:
    epochs: int = 120
    accumulate_grad_batches: int = 1
    device: str = "auto"
    precision: str = "bf16"  # bf16 | 16 | 32 (PRECISIONS)
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
    # false | default | max-autotune; resolve_config parses it once (fst.compile.compile_mode):
    # the typed value is the torch.compile mode, None for eager.
    compile: Any = False
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
class LossConfig:
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class GroupConfig:
    """A registry group: ``name`` (the registry key) and its builder's keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendConfig(GroupConfig):
    """The ``backend`` group and the ``Backend`` built from it once
    (``fst.ops.build_backend(name, **kwargs)``), handed to ``fst.sparsify``."""

    impl: Backend | None = None


@dataclass(frozen=True)
class SparsityConfig:
    """The ``sparsity`` group. Its flat YAML keys split into two parts: ``options``, the
    strategy's options (already applied to ``strategy``), and ``schedule``, the schedule
    parameters of the strategy's sparsifier (``fst.build_sparsifier``)."""

    strategy: Strategy  # fst.strategies.get_strategy(name, **options): the one lookup of a run
    decay: float  # no defaults here: configs/sparsity/*.yaml hold them
    exclude: tuple[str, ...]
    options: dict[str, Any]
    schedule: dict[str, Any]


@dataclass(frozen=True)
class RunConfig:
    """A run config, checked and typed (``resolve_config``)."""

    task: str
    name: str
    seed: int
    trainer: TrainerConfig
    logger: LoggerConfig
    loss: LossConfig
    sparsity: SparsityConfig
    backend: BackendConfig
    model: GroupConfig
    data: GroupConfig
    loader: DataLoaderConfig  # the data group's keys the engine reads itself
    optim: GroupConfig
    sched: GroupConfig


FIXED_GROUPS: dict[str, type] = {
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "loss": LossConfig,
}
#: Registry groups, by config group (``backend``'s keys are checked by ``build_backend``).
REGISTRIES = {"model": MODELS, "data": DATASETS, "optim": OPTIMIZERS, "sched": SCHEDULERS}
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
    ``loss``) whose schema has no such key, before Hydra composes: Hydra's own
    message ("Key 'epohcs' is not in struct ... To append to your config use +trainer.epohcs")
    suggests adding the misspelt key, which then fails later. Names the closest valid key."""
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


def _typed(cfg: DictConfig, group: str, schema: type) -> Any:
    """The fixed group ``group`` as a ``schema`` object (its defaults filled in)."""
    node = cfg.get(group)
    if node is None:
        raise ConfigError(f"config group {group!r} is missing (add it to the defaults list)")
    _check_keys(group, _group_keys(cfg, group), {f.name for f in fields(schema)})
    if group == "logger" and isinstance(node.get("wandb"), DictConfig):
        _check_keys(
            "logger.wandb", [str(k) for k in node.wandb], {f.name for f in fields(WandbConfig)}
        )
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as e:
        raise _type_error(group, schema, node, e) from None


def _type_error(group: str, schema: type, node: Any, e: OmegaConfBaseException) -> ConfigError:
    """``trainer.epochs='three' is not a valid int; e.g. trainer.epochs=120`` from OmegaConf's
    validation error (which names neither the group nor the fix)."""
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


def _check_choice(where: str, value: Any, registry) -> None:
    if value not in registry:
        raise ConfigError(
            f"unknown {registry.kind} {value!r} at {where}; valid choices: "
            f"{', '.join(sorted(registry))}"
        )


def _group_keys(cfg: DictConfig, group: str) -> list[str]:
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config group {group!r} is missing or not a mapping")
    return [str(k) for k in node.keys()]


def _registry_group(cfg: DictConfig, group: str) -> GroupConfig:
    """Check a registry group's ``name`` and keys against its builder; return it typed."""
    name = cfg[group].name
    _check_choice(f"{group}.name", name, REGISTRIES[group])
    skip = 1 if group in ("optim", "sched") else 0  # the model / the optimizer
    valid, open_ = builder_params(REGISTRIES[group].get(name), skip=skip)
    extra = {"model": set(MODEL_KEYS), "data": set(DATA_LOADER_KEYS)}.get(group, {"name"})
    valid -= {"total_steps", "steps_per_epoch"}  # supplied by the engine
    _check_keys(group, _group_keys(cfg, group), valid | extra, open_)
    drop = {"model": MODEL_KEYS, "data": DATA_LOADER_KEYS}.get(group, ("name",))
    return GroupConfig(str(name), group_kwargs(cfg[group], drop=drop))


def resolve_config(cfg: DictConfig, sparsity: SparsityConfig | None = None) -> RunConfig:
    """Check ``cfg`` against the schema and the registries and type it; raise ``ConfigError``
    on the first problem (unknown key, wrong type, unknown registry key, unknown builder
    argument, a value out of range). The strategy and the backend are built here, once
    (``sparsity``: the group as resolved before, when only other groups changed since)."""
    _check_keys("<root>", [str(k) for k in cfg.keys()], set(TOP_LEVEL_KEYS))
    for key in ("task", "model", "data", "sparsity", "backend", "optim", "sched", "trainer"):
        if key not in cfg:
            raise ConfigError(f"config key {key!r} is missing")
    _check_choice("task", cfg.task, TASKS)
    trainer, logger, loss = (_typed(cfg, g, schema) for g, schema in FIXED_GROUPS.items())
    if trainer.precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={trainer.precision!r}; valid choices: {', '.join(PRECISIONS)}"
        )
    try:
        trainer.compile = compile_mode(trainer.compile)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if logger.wandb is not None and logger.wandb.mode not in WANDB_MODES:
        raise ConfigError(
            f"logger.wandb.mode={logger.wandb.mode!r}; valid choices: {', '.join(WANDB_MODES)}"
        )
    model, data = _registry_group(cfg, "model"), _registry_group(cfg, "data")
    loader_part = {k: cfg.data[k] for k in DATA_LOADER_KEYS if k in cfg.data}
    try:
        loader = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(DataLoaderConfig), loader_part)
        )
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid data config: {e}") from None
    optim, sched = _registry_group(cfg, "optim"), _registry_group(cfg, "sched")
    sparsity = sparsity or _resolve_sparsity(cfg)
    backend = _resolve_backend(cfg)
    check_types(cfg)
    _check_values(cfg, trainer, logger)
    check_ranges(cfg)
    return RunConfig(
        task=str(cfg.task),
        name=str(cfg.get("name")),
        seed=int(cfg.seed),
        trainer=trainer,
        logger=logger,
        loss=loss,
        sparsity=sparsity,
        backend=backend,
        model=model,
        data=data,
        loader=loader,
        optim=optim,
        sched=sched,
    )


#: Only checks (launch, tests): the same as ``resolve_config``.
validate_config = resolve_config


def _check_values(cfg: DictConfig, tc: TrainerConfig, logger: LoggerConfig) -> None:
    """Values of the right type that would silently train something else than asked."""
    if tc.epochs < 1:
        raise ConfigError(
            f"trainer.epochs={tc.epochs}: a run trains at least 1 epoch; to only evaluate a "
            "checkpoint use eval.py checkpoint=PATH"
        )
    for key, what in (
        ("limit_train_batches", "at least 1 optimizer step per epoch, or null for the whole "
         "training set"),
        ("limit_val_batches", "at least 1 validation batch, or null for the whole validation set"),
        ("val_every_n_epochs", "validate every N >= 1 epochs"),
        ("log_every_n_steps", "log every N >= 1 optimizer steps"),
    ):  # fmt: skip
        v = getattr(tc, key)
        if v is not None and v < 1:
            raise ConfigError(f"trainer.{key}={v}: {what}")
    clip = tc.grad_clip_norm
    if clip is not None and not clip > 0:
        raise ConfigError(
            f"trainer.grad_clip_norm={clip}: the gradient norm is clipped to a positive value "
            "(e.g. 1.0); a value <= 0 would flip or zero every update. Use null for no clipping"
        )
    for key, v in (
        ("checkpoint_every_n_steps", tc.checkpoint_every_n_steps),
        ("diagnostics_every_n_steps", logger.diagnostics_every_n_steps),
    ):
        if v is not None and v < 0:
            raise ConfigError(f"{key}={v}: use N >= 1 steps, or 0 for never")
    if tc.keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ConfigError(
            f"trainer.keep_checkpoints={tc.keep_checkpoints!r}; valid choices: "
            f"{', '.join(KEEP_CHECKPOINTS)}"
        )
    if tc.debug_signal not in DEBUG_SIGNALS:
        raise ConfigError(
            f"trainer.debug_signal={tc.debug_signal!r}; valid choices: {', '.join(DEBUG_SIGNALS)}"
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


#: Sparsity groups typed in this process, by their YAML: ``train.py``'s check before Hydra and
#: the run itself (or a resume's second typing) share one strategy lookup.
_RESOLVED_SPARSITY: dict[str, SparsityConfig] = {}


def _resolve_sparsity(cfg: DictConfig) -> SparsityConfig:
    """The sparsity group, typed: the strategy built once (``get_strategy``), its options and
    the schedule parameters of its sparsifier (issue 12) apart."""
    keys = _group_keys(cfg, "sparsity")
    for k in SPARSITY_KEYS:
        if k not in keys:
            raise ConfigError(
                f"sparsity.{k} is missing (sparsity group keys: strategy, decay, exclude)"
            )
    sp = cfg.sparsity
    _check_choice("sparsity.strategy", sp.strategy, STRATEGIES)
    _check_choice("backend.name", cfg.backend.name, BACKENDS)
    decay = sp.decay
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or decay < 0:
        raise ConfigError(
            f"sparsity.decay={decay!r}: the SR-STE decay is a number >= 0 (the paper: 2e-4; 0 "
            "turns it off)"
        )
    exclude = sp.exclude
    if exclude is None or isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude):
        raise ConfigError(
            f"sparsity.exclude must be a list of fnmatch patterns (e.g. [conv1, fc]), got {exclude!r}"
        )
    memo = f"{STRATEGIES.version}\n{OmegaConf.to_yaml(sp, resolve=True)}"
    if memo in _RESOLVED_SPARSITY:
        return _RESOLVED_SPARSITY[memo]
    plan = get_strategy(str(sp.strategy))
    schedule_keys = schedule_params(plan.sparsifier) if plan.sparsifier else set()
    # Extra keys are strategy options (fst.sparsify's keyword arguments, declared by
    # fst.strategies.OPTIONS) or schedule parameters of the strategy's sparsifier.
    valid = set(OPTIONS) | schedule_keys | set(SPARSITY_KEYS)
    _check_keys("sparsity", keys, valid)
    extra = group_kwargs(sp, drop=SPARSITY_KEYS)
    options = {k: v for k, v in extra.items() if k not in schedule_keys}
    try:
        plan = get_strategy(plan, **options)  # an option the plan ignores fails here
    except ValueError as e:
        raise ConfigError(f"sparsity.{e}") from None
    except TypeError as e:
        raise ConfigError(f"sparsity: {e}") from None
    schedule = {k: v for k, v in extra.items() if k in schedule_keys}
    typed = SparsityConfig(plan, float(decay), tuple(exclude), options, schedule)
    _RESOLVED_SPARSITY[memo] = typed
    return typed


def _resolve_backend(cfg: DictConfig) -> BackendConfig:
    """The backend group: ``name`` and the keyword arguments of ``fst.ops.build_backend``, and
    the backend built from them once."""
    name = str(cfg.backend.name)
    kwargs = group_kwargs(cfg.backend)
    try:
        impl = build_backend(name, **kwargs)
    except (TypeError, ValueError) as e:
        key = next((k for k in kwargs if k in str(e)), "name")
        raise ConfigError(f"backend.{key}: {e}") from None
    return BackendConfig(name, kwargs, impl)


# --------------------------------------------------------------------------------------------
# types and ranges of every value (issue 27): one table, checked before anything is built
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """An allowed range: ``lo <= v`` (``lo < v`` with ``lo_open``), ``v <= hi`` (``v < hi``
    with ``hi_open``); ``integer``: whole numbers only; ``why``: the fix, for the message."""

    lo: float | None = 0
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    why: str = ""

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def text(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.hi is None:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        lo = f"{self.lo:g} {'<' if self.lo_open else '<='} "
        return f"{kind} {lo}x {'<' if self.hi_open else '<='} {self.hi:.10g}"


SEED_MAX = 2**32 - 1
_POS_INT = Range(1, integer=True)
_NONNEG_INT = Range(0, integer=True)
_UNIT_OPEN = Range(0, 1, hi_open=True)
#: Ranges by dotted key (``*`` matches one level: any group's key of that name). Every other
#: number of the config must still be >= 0 (``DEFAULT_RANGE``): no setting of fst takes a
#: negative value.
RANGES: dict[str, Range] = {
    "seed": Range(0, SEED_MAX, integer=True, why="e.g. seed=0"),
    "loss.label_smoothing": Range(0, 1, hi_open=True, why="0 (off) to below 1, e.g. 0.1"),
    "optim.lr": Range(0, lo_open=True, why="a positive learning rate, e.g. 0.1"),
    "optim.weight_decay": Range(0, why="0 (off) or a positive decay, e.g. 5e-4"),
    "optim.momentum": Range(0, 1, hi_open=True, why="0 to below 1, e.g. 0.9"),
    "optim.betas": Range(0, 1, hi_open=True, why="two numbers 0 to below 1, e.g. [0.9, 0.999]"),
    "sched.min_lr": Range(0, why="0 or a positive final lr (a negative lr is gradient ascent)"),
    "sched.warmup_epochs": Range(0, why="0 (no warm-up) or a positive number of epochs"),
    "sched.warmup_start_factor": Range(0, 1, why="a fraction of optim.lr, 0 to 1, e.g. 0.1"),
    "sched.gamma": Range(0, 1, lo_open=True, why="a factor 0 < gamma <= 1, e.g. 0.1"),
    "sched.milestones": Range(0, integer=True, why="epoch numbers >= 0, e.g. [30, 60, 90]"),
    "data.batch_size": Range(1, integer=True, why="a global batch of at least 1, e.g. 32"),
    "data.val_batch_size": Range(1, integer=True, why="at least 1, or null for data.batch_size"),
    "data.num_workers": Range(0, integer=True, why="0 (load in the main process) or more"),
    "data.image_size": Range(1, integer=True, why="a side length in pixels, e.g. 32"),
    "data.resize_size": Range(1, integer=True, why="a side length in pixels, e.g. 256"),
    "data.num_classes": Range(2, integer=True, why="at least 2 classes, or null to count them"),
    "data.val_fraction": Range(0, 1, lo_open=True, hi_open=True, why="a share between 0 and 1"),
    "data.num_train": _POS_INT,
    "data.num_val": _POS_INT,
    "data.max_objects": _POS_INT,
    "data.distractor": Range(0, 1, why="a probability 0 to 1"),
    "model.width": Range(1, integer=True, why="channels of the first stage, e.g. 64"),
    "model.num_classes": Range(2, integer=True, why="at least 2 classes, or null"),
    "model.img_size": _POS_INT,
    "model.patch_size": _POS_INT,
    "model.embed_dim": _POS_INT,
    "model.depth": _POS_INT,
    "model.num_heads": _POS_INT,
    "model.mlp_ratio": Range(0, lo_open=True),
    "model.drop_path_rate": Range(0, 1, hi_open=True, why="a probability 0 to below 1"),
    "model.min_size": _POS_INT,
    "model.max_size": _POS_INT,
    "trainer.epochs": _POS_INT,
    "trainer.accumulate_grad_batches": _POS_INT,
    "trainer.num_threads": Range(0, integer=True, why="a thread count, 0 or null: automatic"),
    "trainer.max_nonfinite_skips": _NONNEG_INT,
    "trainer.checkpoint_every_n_steps": _NONNEG_INT,
    "logger.diagnostics_every_n_steps": _NONNEG_INT,
    "sparsity.decay": Range(0, why="the SR-STE decay, 0 (off) or e.g. 2e-4"),
    "*.log_images": _NONNEG_INT,
}
DEFAULT_RANGE = Range(0, why="no setting of fst takes a negative value")
#: Groups whose numbers are checked (``hydra`` is Hydra's own).
RANGED_GROUPS = ("data", "model", "optim", "sched", "loss", "trainer", "logger", "sparsity")
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _annotation_types(annotation: Any) -> set[type] | None:
    """``{int, NoneType}`` for ``'int | None'``; None when the annotation is anything else."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not text:
        return None
    out: set[type] = set()
    for part in (p.strip() for p in text.replace("Optional[", "").rstrip("]").split("|")):
        if part == "None":
            out.add(type(None))
        elif part in _TYPES:
            out.add(_TYPES[part])
        else:
            return None
    return out or None


def _fits(value: Any, types: set[type]) -> bool:
    if value is None:
        return type(None) in types
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return bool(types & {int, float})
    if isinstance(value, float):
        return float in types
    return type(value) in types


def _builder_types(cfg: DictConfig, group: str) -> dict[str, set[type]]:
    """``{key: allowed types}`` of a registry group's keys, from its builder's annotations."""
    registry = REGISTRIES[group]
    name = cfg[group].get("name")
    if name not in registry:
        return {}
    params = inspect.signature(registry.get(name)).parameters
    out = {}
    for key, p in params.items():
        types = _annotation_types(p.annotation)
        if types is not None:
            out[key] = types
    if group == "data":
        for f in fields(DataLoaderConfig):
            if f.name != "name":
                out[f.name] = _annotation_types(f.type) or out.get(f.name)
    return {k: v for k, v in out.items() if v is not None}


def _range_for(key: str) -> Range:
    if key in RANGES:
        return RANGES[key]
    group, _, leaf = key.partition(".")
    return RANGES.get(f"*.{leaf}", DEFAULT_RANGE)


def _numbers(value: Any) -> list[Any]:
    """The numbers in a value (a list's elements one level down), booleans excluded."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_value(key: str, value: Any) -> None:
    """Raise ``ConfigError`` if the number(s) of ``key`` fall outside ``RANGES``."""
    rng = _range_for(key)
    for v in _numbers(value):
        bad = not math.isfinite(v) or not rng.holds(v)
        if rng.integer and isinstance(v, float) and not v.is_integer():
            bad = True
        if bad:
            raise ConfigError(
                f"{key}={_shown(value)} is out of range: it must be {rng.text()}; "
                + (f"use {rng.why}" if rng.why else f"pass {key}=<a value in that range>")
            )


def check_types(cfg: DictConfig) -> None:
    """``seed`` and every key of the registry groups against its type (the builders'
    annotations; the fixed groups are typed by their dataclasses): one line naming the key,
    the value and an example."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(
            f"seed={_shown(seed)} is not a whole number; pass e.g. seed=0 (0..{SEED_MAX})"
        )
    for group in ("model", "data", "optim", "sched"):
        types = _builder_types(cfg, group)
        node = cfg.get(group)
        for key in node.keys():
            if OmegaConf.is_missing(node, key):
                continue
            try:
                value = node[key]
            except InterpolationResolutionError:
                continue
            want = types.get(str(key))
            # null: the engine or the task fills it in (e.g. num_classes from the data)
            if want is not None and value is not None and not _fits(value, want):
                names = "/".join(sorted("null" if t is type(None) else t.__name__ for t in want))
                raise ConfigError(
                    f"{group}.{key}={_shown(value)} is not a valid {names}; pass e.g. "
                    f"{group}.{key}={_example(cfg, group, str(key))}"
                )


def check_ranges(cfg: DictConfig) -> None:
    """Every number of the config against its range (``RANGES``, else >= 0)."""
    check_value("seed", cfg.get("seed"))
    for group in RANGED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        _check_ranges(node, group)


def _check_ranges(node: DictConfig, prefix: str) -> None:
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            continue
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue
        full = f"{prefix}.{key}"
        if isinstance(value, DictConfig):
            if full not in ("model.kwargs",):
                _check_ranges(value, full)
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_object(value)
        check_value(full, value)


def _example(cfg: DictConfig, group: str, key: str) -> Any:
    """The builder's default for ``group.key`` (the fix's example value)."""
    registry = REGISTRIES[group]
    try:
        p = inspect.signature(registry.get(cfg[group].name)).parameters.get(key)
    except Exception:  # noqa: BLE001 - only an example
        p = None
    if p is not None and p.default is not inspect.Parameter.empty and p.default is not None:
        return p.default
    f = next((f for f in fields(DataLoaderConfig) if f.name == key), None)
    if f is not None and f.default not in (None, MISSING):
        return f.default
    return "<number>"
