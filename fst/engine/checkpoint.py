"""Checkpoint files: atomic writes, safe and verified loads, resume discovery, RNG state.

A checkpoint is a plain ``dict`` saved with ``torch.save`` (zip format) and loaded with
``torch.load(weights_only=True)``, so it may hold only tensors, numbers, strings, ``None`` and
(nested) dicts, lists and tuples of those; no arbitrary pickled objects are ever executed.

Layout of a run directory written by the engine (``run_dir/checkpoints/``)::

    last.pt        newest checkpoint (every ``trainer.checkpoint_every_n_steps`` steps, at each
                   epoch end and on preemption)
    best.pt        best (finite) validation metric so far (not with ``keep_checkpoints=last``)
    last.prev.pt   only with ``trainer.keep_checkpoints=all``: the ``last.pt`` it replaced
    best.prev.pt   (likewise for ``best.pt``)

``find_resume`` tries ``last.pt``, then ``last.prev.pt``, then every other surviving checkpoint
(``best.pt`` included) when the newer ones are truncated or corrupt. Without ``.prev`` copies
(the default ``last_best``) a damaged ``last.pt`` therefore falls back to ``best.pt``.

Writes go to a temporary file in the same directory, are flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX), and the directory is fsynced so the rename itself
survives a power loss. A crash at any moment therefore leaves either the old or the new file,
never half of one; a full disk fails naming the cause and the file, with the previous
checkpoint intact, and the temporary files a killed writer left are removed by
``remove_stale_tmp`` when the next run claims the directory. Loads verify the zip CRC of every record first, which catches truncation and
flipped bytes that ``torch.load`` alone would read back as silently wrong tensor values.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fst.types import FstError

log = logging.getLogger(__name__)

CHECKPOINT_DIRNAME = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
#: Keys of ``meta`` that must match for a checkpoint to be resumed (see ``check_meta_compatible``).
RESUME_META_KEYS = ("task", "model", "strategy", "num_classes")


class CheckpointError(FstError, RuntimeError):
    """A checkpoint cannot be used (missing, truncated, corrupt, unsafe, from another run) or
    cannot be written (disk full, no permission)."""


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def previous_path(path: str | os.PathLike) -> Path:
    """``run/last.pt`` -> ``run/last.prev.pt``: where ``save_checkpoint`` keeps the replaced file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk; not every OS/filesystem
    # lets us open a directory, so failure here is not an error.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def save_checkpoint(
    path: str | os.PathLike, state: Mapping[str, Any], *, keep_previous: bool = True
) -> None:
    """Write ``state`` to ``path`` atomically.

    The state is written to ``.<name>.tmp-<pid>`` beside ``path``, flushed, fsynced and renamed over
    ``path``. With ``keep_previous`` the file being replaced is first hard-linked (copied where
    links are unsupported) to ``previous_path(path)``, so ``path`` exists at every instant and
    the previous good checkpoint survives a later corruption of ``path``. Without it, a
    ``previous_path(path)`` left by earlier saves is removed once the new file is safely renamed
    (``path`` exists at every instant either way).

    String values under secret-looking keys (``api_key``, ``token``, ``password``, ...) and any
    string equal to ``$WANDB_API_KEY`` are replaced by ``"<redacted>"`` before writing.
    """
    path = Path(path)
    state = redact_secrets(dict(state))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # A run's checkpoints/ folder is made only inside its existing run directory: one
        # deleted while the run was writing it is reported, not silently made again.
        path.parent.mkdir(parents=path.parent.name != CHECKPOINT_DIRNAME, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_copy(path, previous_path(path))
        _atomic_replace(tmp, path)
        if not keep_previous:
            previous_path(path).unlink(missing_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def write_error(path: Path, e: OSError) -> CheckpointError:
    """A ``CheckpointError`` for a failed write of ``path``: the cause (disk full, quota, no
    permission, ...), the file, what survived and what to do."""
    what = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(e.errno, f"{type(e).__name__}: {e.strerror or e}")
    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = ""
    if path.is_dir() or e.errno == errno.EISDIR:
        return CheckpointError(
            f"cannot write checkpoint {path}: a directory of that name is in the way (errno "
            f"{e.errno}); move or remove that directory, then resume with resume=auto"
        )
    if not path.parent.is_dir():
        return CheckpointError(
            f"cannot write checkpoint {path}: its folder {path.parent} no longer exists (the run "
            "directory was deleted or moved while the run was writing it); the checkpoints of "
            "this run are gone with it, so start the run again (resume=auto finds nothing there)"
        )
    kept = (
        f" The previous {path.name} is intact (nothing was replaced)."
        if path.exists()
        else " No earlier file of that name existed."
    )
    return CheckpointError(
        f"cannot write checkpoint {path}: {what} (errno {e.errno}{free}).{kept} Free space "
        f"under {path.parent} (or point output_root= to a larger disk), then resume with "
        "resume=auto."
    )


def remove_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.*.tmp-<pid>``, ``*.tmp``) a killed writer left in
    ``directory`` and its ``checkpoints/``. Call only while owning the run directory (no
    other process writes there). Returns the removed paths."""
    directory = Path(directory)
    removed = []
    for d in (directory, directory / CHECKPOINT_DIRNAME):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if (p.name.startswith(".") and ".tmp-" in p.name) or p.name.endswith(".tmp"):
                if p.is_file() or p.is_symlink():
                    p.unlink()
                    removed.append(p)
    for p in removed:
        log.warning("removed %s: a temporary file left by a writer that was killed", p)
    return removed


def nonfinite_entries(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors of ``state_dict`` holding NaN or Inf."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())
    ]


def _keep_copy(path: Path, prev: Path) -> None:
    """Make ``prev`` hold the bytes of ``path`` without ever leaving ``prev`` half-written."""
    tmp = prev.with_name(f".{prev.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)
    except OSError:  # filesystems without hard links (some network/FUSE mounts)
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    _atomic_replace(tmp, prev)


# Whole name parts only: "api_key", "auth_token", "client_secret"; not "tokenizer".
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_-]?key|token|secret|password|passwd)($|[_\-.])", re.IGNORECASE
)
REDACTED = "<redacted>"


def redact_secrets(obj: Any) -> Any:
    """Copy of ``obj`` (nested dicts/lists/tuples) with secrets replaced by ``"<redacted>"``.

    A secret is a non-empty string stored under a key matching api_key/token/secret/password, or
    any string equal to the ``WANDB_API_KEY`` environment variable. Tensors are returned as is.
    """
    env_key = os.environ.get("WANDB_API_KEY")
    return _redact(obj, "", env_key)


def _redact(obj: Any, key: str, env_key: str | None) -> Any:
    if isinstance(obj, str):
        if obj and (_SECRET_KEY.search(key) or (env_key and obj == env_key)):
            log.warning("not writing the value of %r to the checkpoint (looks like a secret)", key)
            return REDACTED
        return obj
    if isinstance(obj, Mapping):
        return type(obj)((k, _redact(v, str(k), env_key)) for k, v in obj.items())
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return type(obj)(_redact(v, key, env_key) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _fallback_hint(path: Path) -> str:
    prev = previous_path(path)
    if prev.exists() and prev != path:
        return f" The previous checkpoint {prev} may still be good: resume=auto falls back to it."
    return " Resume from an earlier checkpoint or start the run again."


def _verify_zip(path: Path) -> None:
    """Check every record's CRC: catches truncation and flipped bytes inside tensor data."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({e}; {path.stat().st_size} bytes)."
            + _fallback_hint(path)
        ) from None
    except (OSError, EOFError, ValueError, zipfile.LargeZipFile) as e:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e})." + _fallback_hint(path)
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: record {bad!r} fails its CRC check."
            + _fallback_hint(path)
        )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint dict written by ``save_checkpoint`` (or any ``torch.save`` of a dict).

    Raises ``CheckpointError`` naming the file when it is missing, empty, truncated, fails its
    CRC check, holds pickled objects outside the weights-only allow-list (code could run on
    load, so it is refused), or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file).")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)." + _fallback_hint(path))
    if zipfile.is_zipfile(path):
        _verify_zip(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler's message ends with the offending global/opcode; keep that.
        found = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?(\S+)", str(e), re.IGNORECASE)
        if found:
            raise CheckpointError(
                f"refusing to load {path}: it contains a pickled object that is not a tensor, "
                f"number or container (global {found.group(1)}). Loading it could run arbitrary "
                "code; fst checkpoints never contain such objects. If the file is yours and "
                "trusted, re-save its tensors as a plain state_dict."
            ) from None
        opcode = re.search(r"Unsupported operand[^\n]*", str(e))
        what = opcode.group(0).strip() if opcode else str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a weights-only torch checkpoint ({what}); it "
            "was refused without executing any of it." + _fallback_hint(path)
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure to parse means a damaged file
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {str(e)[:200]})."
            + _fallback_hint(path)
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, expected a dict of state."
        )
    return state


def resume_candidates(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints under ``run_dir`` in the order ``find_resume`` tries them.

    ``last.pt`` then ``last.prev.pt`` (in ``run_dir/checkpoints/``, then ``run_dir`` itself),
    then every other surviving ``*.pt`` there, ``best.pt`` included, newest first: when the
    newer files are damaged, an older state is still better than starting over.
    """
    run_dir = Path(run_dir)
    dirs = [run_dir / CHECKPOINT_DIRNAME, run_dir]
    ordered: list[Path] = []
    for d in dirs:
        for name in (LAST, previous_path(LAST).name):
            if (d / name).is_file():
                ordered.append(d / name)
            elif (d / name).exists():
                log.warning(
                    "skipping %s: it is not a file (a directory?); move or remove it", d / name
                )
    others = [
        p for d in dirs if d.is_dir() for p in d.glob("*.pt") if p not in ordered and p.is_file()
    ]
    others.sort(key=lambda p: (p.stat().st_mtime, p.name.startswith("best")), reverse=True)
    return ordered + others


def find_resume(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint under ``run_dir`` that loads cleanly, or ``None`` if there is none.

    Corrupt or truncated candidates are skipped with a warning naming them, so ``resume=auto``
    falls back to ``last.prev.pt`` when ``last.pt`` was damaged (then to any other survivor).
    """
    found = load_resume(run_dir)
    return None if found is None else found[0]


def load_resume(run_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(path, state)`` of the newest checkpoint under ``run_dir`` that loads cleanly and holds
    finite weights (see ``find_resume``), or ``None``."""
    for cand in resume_candidates(run_dir):
        try:
            state = load_checkpoint(cand)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
            continue
        bad = nonfinite_entries(state.get("model") or {})
        if bad:
            log.warning(
                "skipping checkpoint %s: non-finite weights in %d tensor(s) (first %s)",
                cand,
                len(bad),
                bad[0],
            )
            continue
        return cand, state
    return None


# --------------------------------------------------------------------------------------------
# compatibility checks
# --------------------------------------------------------------------------------------------


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict_compatible(
    model: nn.Module | Mapping[str, torch.Tensor],
    state_dict: Mapping[str, Any],
    *,
    source: str = "",
) -> None:
    """Raise ``CheckpointError`` unless ``state_dict`` has exactly ``model``'s keys and shapes.

    The message lists missing keys (in the model, not the checkpoint), unexpected keys (in the
    checkpoint only) and shape mismatches ``key: checkpoint [..] vs model [..]``. Sparse layers
    keep dense weight names, so a different *strategy* is not visible here; compare ``meta``
    with ``check_meta_compatible`` for that.
    """
    expected = model.state_dict() if isinstance(model, nn.Module) else model
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict
        and isinstance(v, torch.Tensor)
        and isinstance(state_dict[k], torch.Tensor)
        and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched, 5)}")
    hint = ""
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hint = " The checkpoint keys carry a 'module.' prefix (saved from a DDP wrapper); save model.module.state_dict() instead."
    else:
        hint = " Is it a checkpoint of a different model (or number of classes)?"
    where = f" {source}" if source else ""
    raise CheckpointError(
        f"checkpoint{where} does not fit the model: " + "; ".join(parts) + "." + hint
    )


def check_meta_compatible(
    meta: Mapping[str, Any] | None,
    expected: Mapping[str, Any],
    *,
    keys: Iterable[str] | None = None,
    source: str = "",
) -> None:
    """Raise ``CheckpointError`` if ``meta`` (saved in a checkpoint) differs from ``expected``.

    ``keys`` limits the comparison (default: every key of ``expected``). Typical ``meta``:
    ``{"task", "model", "strategy", "backend", "dataset", "num_classes"}``; resume compares
    ``RESUME_META_KEYS`` (a backend change is allowed: the backends compute the same function).
    """
    where = f" {source}" if source else ""
    if not meta:
        raise CheckpointError(
            f"checkpoint{where} has no 'meta' (strategy, model, ...), so it cannot be checked "
            "against this run; it was not written by fst's trainer. To start a new run from its "
            "weights use model.pretrained=<file> (and resume=null)."
        )
    keys = list(expected) if keys is None else list(keys)
    diffs = [
        f"{k}: checkpoint {meta.get(k, '<absent>')!r} vs this run {expected.get(k)!r}"
        for k in keys
        if k in expected and meta.get(k, "<absent>") != expected.get(k)
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint{where} was written by a different configuration: "
            + "; ".join(diffs)
            + ". Resume with the checkpoint's settings or start a new run directory."
        )


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------


def capture_rng_state() -> dict:
    """Every global RNG state (Python, NumPy, torch CPU and CUDA) in a weights_only-loadable form.

    Python's state becomes ``[version, list[int] (625), gauss_next]``, NumPy's legacy MT19937
    state ``[name, int64 tensor (624), pos, has_gauss, cached_gaussian]``; torch states are the
    uint8 tensors torch hands out. ``cuda`` is a list with one state per visible device (empty
    without CUDA).
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng_state``.

    CUDA states are restored when CUDA is available and the device count matches; otherwise a
    warning says the CUDA streams will differ (resume stays correct, not bit-identical).
    """
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (
            str(name),
            np.asarray(keys, dtype=np.int64).astype(np.uint32),
            int(pos),
            int(has_gauss),
            float(cached),
        )
    )
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda = list(state.get("cuda") or [])
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(
                [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in cuda]
            )
        else:
            log.warning(
                "checkpoint holds CUDA RNG states for %d device(s) but %d are visible; CUDA random "
                "streams are not restored, so the resumed run will not be bit-identical",
                len(cuda),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )
