"""Error handling of the command-line entry points (``train.py``, ``eval.py``).

A problem the user can fix (``fst.types.FstError``: a bad config, missing data, a refused
checkpoint, divergence, a full disk, a busy run directory) is printed as one message naming the
cause and the fix, without a traceback, and the process exits with status 1. Ctrl-C outside the
training loop exits with 130 (inside it the trainer checkpoints first, see
``fst.engine.faults``). Any other exception is a bug and keeps its traceback.

Exit statuses: 0 finished; 1 failed (message printed); 75 preempted, ``last.pt`` written,
continue with ``resume=auto``; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from fst.types import FstError

INTERRUPTED = 130

# What a surviving process of a multi-process run sees when a peer died (SIGKILL, OOM killer, a
# lost node): the collective it waits in fails inside gloo / NCCL / the rendezvous store.
_PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "gloo",
    "NCCL communicator was aborted",
    "ProcessGroupNCCL",
    "TCPStore",
)


def peer_lost(e: BaseException) -> bool:
    """Whether ``e`` is a collective failing because another process of a multi-process run
    (``WORLD_SIZE`` > 1) died, rather than a bug of this one."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or not isinstance(e, RuntimeError):
        return False
    dist = sys.modules.get("torch.distributed")
    dist_error = getattr(dist, "DistError", None) if dist is not None else None
    if dist_error is not None and isinstance(e, dist_error):
        return True
    return any(s in str(e) for s in _PEER_LOST)


def _peer_lost_message(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    rank = os.environ.get("RANK", "?")
    return (
        f"error: rank {rank}: another process of this distributed run stopped ({first}). "
        "Its own message, or torchrun's failure table, names the cause; the checkpoints written "
        "before it are intact: fix that cause, then run the same command with resume=auto"
    )


def exit_status(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """``(status, result)`` of ``fn(*args, **kwargs)``; failures are reported on stderr (by
    rank 0 of a multi-process run) and become a status instead of an exception."""
    quiet = os.environ.get("RANK", "0") != "0"
    try:
        return 0, fn(*args, **kwargs)
    except FstError as e:
        if not quiet:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1, None
    except KeyboardInterrupt:
        if not quiet:
            print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return INTERRUPTED, None
    except SystemExit as e:
        code = e.code
        return (code if isinstance(code, int) else (0 if code is None else 1)), None
    except RuntimeError as e:
        if not peer_lost(e):
            raise
        # every surviving rank says it once: rank 0 may be the one that died
        print(_peer_lost_message(e), file=sys.stderr, flush=True)
        return 1, None


def run_cli(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``'s result, or ``sys.exit`` with its status (see ``exit_status``)."""
    status, result = exit_status(fn, *args, **kwargs)
    if status:
        sys.exit(status)
    return result
