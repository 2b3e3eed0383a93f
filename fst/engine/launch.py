"""The command line, checked before Hydra starts a job: a rejected command creates nothing.

Hydra makes the job's directory (``hydra.run.dir``) before any of fst's code runs, and reports
its own composition errors in several lines ("Key 'imagesize' is not in struct ... To append to
your config use +data.imagesize=16", which suggests adding the misspelt key). ``check_command``
runs first, in ``train.py`` and ``eval.py``, before ``hydra.main``:

1. the overrides are composed the way Hydra will compose them (a multirun: its first job);
   Hydra's errors become one line: an unknown key with the closest valid key of its group
   (the group's config file and its builder's arguments), a grammar error with the quoting
   that fixes it, an unknown group option with the valid choices;
2. ``fst.engine.config.validate_config`` checks every key, type and range (train.py); eval.py's
   ``export=``/``output=`` may not name a file of a training run;
3. where the job would write: ``output_root`` and ``name`` give a path under ``output_root``
   that can be created (no file or broken link in its way, writable, not on a full disk,
   components of at most 255 bytes, no ``..``, no unexpanded ``~``);
4. the environment: thread counts (``FST_NUM_THREADS``, ``OMP_NUM_THREADS``,
   ``trainer.num_threads``) and a ``WORLD_SIZE`` left over without a launcher.

Each failure is a ``ConfigError``: ``fst.engine.cli`` prints it as one line and exits with 1.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from fst.engine.config import REGISTRIES, builder_params, validate_config
from fst.engine.evaluation import refuse_run_file
from fst.threads import num_threads as pick_threads
from fst.types import ConfigError

__all__ = ["check_command", "check_environment", "check_output_path", "compose_checked"]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: Flags after which Hydra starts no job (help, config printing, shell completion).
NO_JOB_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version",
                "--shell-completion", "-sc", "--resolve", "--package", "-p",
                "--experimental-rerun")  # fmt: skip
#: Flags that choose another config: the check cannot know that config, Hydra checks it.
OTHER_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
#: Free space (bytes) below which a file system counts as full.
MIN_FREE_BYTES = 1 << 20
NAME_MAX = 255


def check_command(config_name: str, argv: Sequence[str]) -> DictConfig | None:
    """Check ``argv`` (``sys.argv[1:]`` after ``normalize_overrides``) for ``config_name``;
    raises ``ConfigError``. Returns the composed config (None when no job will run)."""
    args = list(argv)
    if any(a.split("=", 1)[0] in NO_JOB_FLAGS + OTHER_CONFIG_FLAGS for a in args):
        return None
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if multirun:
        overrides = _first_job(overrides)
        if overrides is None:
            return None
    cfg = compose_checked(config_name, overrides)
    try:
        if config_name == "config":
            validate_config(cfg)
            out = None if multirun else cfg.hydra.run.dir
            check_output_path(cfg, out, multirun)
        else:
            for key in ("export", "output"):
                if cfg.get(key):
                    refuse_run_file(Path(str(cfg[key])), key)
            check_output_path(cfg, cfg.hydra.run.dir, False)
        trainer = cfg.get("trainer") or {}
        check_environment(trainer.get("num_threads") if "trainer" in cfg else cfg.num_threads)
    except ConfigError:
        raise
    except Exception as e:  # an interpolation that cannot be resolved, a bad value type
        raise ConfigError(f"invalid config: {_first_line(e)}") from None
    return cfg


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _first_job(overrides: list[str]) -> list[str] | None:
    """The overrides of a multirun's first job (each sweep replaced by its first value)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - reported below as a grammar error
        raise _grammar_error(overrides, e) from None
    out = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - an interval sweep etc.: Hydra checks it
                return None
            out.append(f"{raw.split('=', 1)[0]}={first}")
        else:
            out.append(raw)
    return out


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose like ``hydra.main`` will; Hydra's errors become one-line ``ConfigError``s."""
    try:
        return _compose(config_name, overrides)
    except OverrideParseException as e:
        raise _grammar_error(overrides, e) from None
    except MissingConfigException as e:
        raise ConfigError(_missing_option(e)) from None
    except Exception as e:  # noqa: BLE001 - every Hydra error becomes one line
        cause = e.__cause__
        if isinstance(cause, ConfigAttributeError | ConfigKeyError) and "not in struct" in str(
            cause
        ):
            key = str(getattr(cause, "full_key", "") or "")
            raise ConfigError(_unknown_key(config_name, overrides, key)) from None
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"invalid command line: {msg}") from None


def _grammar_error(overrides: list[str], e: Exception) -> ConfigError:
    bad = next((o for o in overrides if _parse_fails(o)), None)
    detail = _first_line(e)
    if bad is None:
        return ConfigError(f"cannot parse the command line ({detail}); check the key=value syntax")
    key, _, value = bad.partition("=")
    return ConfigError(
        f"cannot parse the override {bad!r}: Hydra's grammar does not allow some characters "
        f"(e.g. ~, spaces, non-ASCII letters, brackets) unquoted; quote the value: "
        f"\"{key}='{value}'\" (see https://hydra.cc/docs/advanced/override_grammar/basic)"
    )


def _parse_fails(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:  # noqa: BLE001
        return True
    return False


def _missing_option(e: Exception) -> str:
    """``Could not find 'sparsity/fts'`` + the available options, in one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    head = lines[0] if lines else "unknown config option"
    options, group = [], None
    for line in lines[1:]:
        if line.startswith("Available options in"):
            group = line.rstrip(":")
            continue
        if line.startswith("Config search path"):
            break
        if group is not None:
            options.append(line)
    if group is None:
        return head
    return f"{head}. {group}: {', '.join(options)}; pick one of them"


def _unknown_key(config_name: str, overrides: list[str], key: str) -> str:
    """``unknown config key data.imagesize; did you mean data.image_size?`` (candidates: the
    keys of the group as composed without the bad override, and its builder's arguments)."""
    bad = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key]
    rest = [o for o in overrides if o not in bad]
    parts = key.split(".")
    group, leaf = ".".join(parts[:-1]), parts[-1]
    try:
        base = _compose(config_name, rest)
        node = OmegaConf.select(base, group) if group else base
        keys = {str(k) for k in node.keys()} if isinstance(node, DictConfig) else set()
    except Exception:  # noqa: BLE001 - only for the hint
        base, keys = None, set()
    extra = _builder_args(base, group) - keys if base is not None else set()
    value = bad[0].split("=", 1)[1] if bad and "=" in bad[0] else "..."
    if leaf in extra:
        return (
            f"{key} is not in the {group} config file; it is an argument of the chosen "
            f"{group} builder, add it with +{key}={value}"
        )
    close = difflib.get_close_matches(leaf, sorted(keys | extra), n=1)
    hint = f"; did you mean {f'{group}.' if group else ''}{close[0]}?" if close else ""
    where = group or "the config"
    return f"unknown config key {key}{hint} Valid keys for {where}: {', '.join(sorted(keys))}" + (
        "" if close else f"; fix the key or drop {key}"
    )


def _builder_args(cfg: DictConfig | None, group: str) -> set[str]:
    if group not in REGISTRIES:
        return set()
    try:
        skip = 1 if group in ("optim", "sched") else 0
        params = builder_params(REGISTRIES[group].get(cfg[group].name), skip=skip)[0]
    except Exception:  # noqa: BLE001 - only for the hint
        return set()
    return params - {"total_steps", "steps_per_epoch"}


def check_environment(num_threads: Any = None) -> None:
    """Thread settings and launcher variables that would fail (or mislead) later."""
    try:
        pick_threads(num_threads)
    except ValueError as e:
        raise ConfigError(f"{e}; fix or unset it") from None
    if "WORLD_SIZE" in os.environ and not os.environ.get("SUBMITIT_EXECUTOR"):
        ws = os.environ["WORLD_SIZE"]
        try:
            n = int(ws)
        except ValueError:
            n = -1
        launcher = all(k in os.environ for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR"))
        if n < 1 or (n > 1 and not launcher):
            raise ConfigError(
                f"WORLD_SIZE={ws} is set but this process was not started by torchrun (RANK, "
                "LOCAL_RANK or MASTER_ADDR missing): it is left over in the environment; unset "
                "WORLD_SIZE, or start the run with torchrun --nproc_per_node=N train.py ..."
            )


def check_output_path(cfg: DictConfig, run_dir: Any, multirun: bool) -> None:
    """``output_root`` and ``name`` give a directory that can be created here."""
    root = str(cfg.output_root)
    if root.startswith("~"):
        raise ConfigError(
            f"output_root={root!r}: '~' is not expanded in output_root (the run would go to a "
            f"folder named '~' here); write output_root=$HOME{root[1:]} (unquoted: the shell "
            "expands it) or an absolute path"
        )
    name = cfg.get("name")
    if name is not None:
        name = str(name)
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigError(
                f"name={name!r} would write outside output_root ({root}); a run name is a "
                "relative path without '..', e.g. name=my_run (choose the place with "
                "output_root=...)"
            )
    target = Path(str(run_dir)) if run_dir is not None else Path(root)
    for part in target.parts:
        if len(part.encode()) > NAME_MAX:
            raise ConfigError(
                f"the run directory {str(target)[:80]}... has a component of "
                f"{len(part.encode())} bytes ({part[:40]}...); file systems allow {NAME_MAX}: "
                "use a shorter name=..."
            )
    probe = target
    while True:
        if os.path.lexists(probe) and not probe.exists():
            raise ConfigError(
                f"output_root={root}: {probe} is a broken symbolic link (its target "
                f"{os.readlink(probe)} does not exist); create the target or choose another "
                "output_root=..."
            )
        if probe.exists():
            break
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"output_root={root}: {probe} is a file, not a directory, so the run directory "
            f"{target} cannot be created; choose another output_root=..."
        )
    try:  # a real trial: permissions, a read-only mount, a full disk, quotas
        os.rmdir(tempfile.mkdtemp(prefix=".fst-probe-", dir=probe))
    except OSError as e:
        raise ConfigError(
            f"output_root={root}: cannot create a directory in {probe} ({e.strerror or e}), so "
            "the run directory cannot be created; choose a writable output_root=... with free "
            "space"
        ) from None
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"output_root={root}: the disk holding {probe} is full ({free} bytes free); free "
            "space there or choose another output_root=..."
        )
