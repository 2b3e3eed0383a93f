"""Writers shared by the analysis scripts: CSV, Markdown tables, and a provenance record.

Every file in ``results/`` says how it was made; ``provenance()`` collects the command line,
machine, commit and date that ``results/README.md`` lists next to each file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch


def _git_commit() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when code (not ``results/``) has changes.

    Changes under ``results/`` are the outputs of this and earlier commands, not their source.
    """
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=root
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine() -> str:
    """One line naming the CPU (and GPU when CUDA is available)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    try:  # timings on a shared machine mean little without it
        desc += ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        pass
    return desc


def provenance() -> dict[str, str]:
    """``{"command", "machine", "commit", "date"}`` for the running script."""
    # Thread settings change timings (and OpenMP on an oversubscribed CPU can be 30x slower
    # with 2 threads than with 1), so they are part of the command.
    env = "".join(
        f"{k}={os.environ[k]} "
        for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    )
    return {
        "command": env + "python " + " ".join(sys.argv),
        "machine": machine(),
        "commit": _git_commit(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV; columns default to the first row's keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def markdown_table(
    rows: Iterable[dict], columns: Sequence[str], headers: Sequence[str] | None = None
) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns``."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_markdown(
    path: str | Path, title: str, body: str, prov: dict[str, str] | None = None
) -> Path:
    """``# title``, a provenance block, then ``body``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = prov or provenance()
    head = [f"# {title}", ""]
    head += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in prov.items()]
    path.write_text("\n".join(head) + "\n\n" + body.rstrip() + "\n")
    return path
