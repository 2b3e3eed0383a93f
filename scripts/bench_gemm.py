"""Time the three GEMMs of every ResNet-50 convolution (and ViT-B's MLP) dense vs 2:4 sparse.

    python scripts/bench_gemm.py                       # CUDA, batch 256, 224 px, bf16
    python scripts/bench_gemm.py --device cpu --dry-run  # seconds on CPU: emulated, tiny

For each distinct layer shape (with how often it occurs), in the im2col view of the paper
(``K = Ci*kh*kw``, ``P = batch*Ho*Wo`` output positions; ViT-B: ``P = 197*batch`` tokens):

- Eq. 1 ``Y = S(W) X``: M = Co, K, N = P; the sparse operand S(W) is 2:4 along K.
- Eq. 2 ``dX = S(W^T)^T dY``: M = K, K = Co, N = P; S(W^T) is 2:4 along Co.
- Eq. 3 ``dW = dY X^T``: M = Co, K = P, N = K; 2:4 along positions would prune an activation
  (S(dY) or S(X^T)); ``half`` is fst's exact halved Eq. 3 (a dense GEMM over P/2, as
  ``native`` runs it).

``dense`` is ``torch.mm`` in bf16 (cuBLAS), ``sparse`` is cuSPARSELt (``torch._cslt_sparse_mm``)
on the pre-compressed operand, both writing the (N, M) output the backends use; ``compress``
(``torch._cslt_compress``) and ``mask`` (the 2:4 mask of the operand, :func:`fst.masks.nm_mask`)
are timed separately: a weight operand pays them once per step, an activation operand too.
Times are GPU times: medians of ``--reps`` replays of a CUDA graph of the call
(:func:`fst.ops.gputime.graph_ms`: no host work, as in a step replayed as a CUDA graph);
``dense eager`` / ``sparse eager`` are single eager calls between CUDA events, host work
included (cuSPARSELt builds its plan on the host at every call). Prints a Markdown table, then
one JSON line (the last line) with every row and the totals weighted by layer count.

Host cost per call (issue 23: at most 50 us): ``host us`` columns are the host microseconds of
one eager call, enqueued back to back without synchronizing (``--reps`` calls after a warm-up;
the GPU work runs behind them): ``torch`` is ``torch._cslt_sparse_mm`` (a plan built every
call), ``cached`` the same product from a persistent plan (:class:`fst.ops.cslt.CusparseltGemm`
with its CuPy driver, :mod:`fst.ops.cslt_cupy`; ``driver`` says which one actually ran),
``compress`` ``torch._cslt_compress``, ``dense`` ``torch.mm``. ``--models vit_l`` adds ViT-L/16's
MLP (1024 <-> 4096 over 197 tokens per image).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

import torch
import torchvision
from torch import nn

from fst.masks import nm_mask
from fst.ops.cslt import CusparseltGemm, EmulatedGemm, cusparselt_version
from fst.ops.gputime import graph_ms, time_ms


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--res", type=int, default=224, help="ResNet-50 input resolution")
    p.add_argument(
        "--models", default="resnet50,vit_b", help="comma-separated: resnet50, vit_b, vit_l"
    )
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per GEMM (median)")
    p.add_argument("--limit", type=int, default=0, help="only the first N layer shapes (0: all)")
    p.add_argument(
        "--search-alg",
        action="store_true",
        help="let cuSPARSELt search its fastest algorithm per GEMM (torch._cslt_sparse_mm_search) "
        "instead of its default one",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU check of the code path: batch 2, 32 px, emulated sparse GEMM, 1 rep, 3 shapes",
    )
    p.add_argument("--out", default="outputs/bench_gemm", help="writes bench_gemm.md/.json here")
    args = p.parse_args(argv)
    if args.dry_run:
        args.batch, args.res, args.reps = 2, 32, 1
        args.limit = args.limit or 3
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu --dry-run")
    if not args.device.startswith("cuda") and not args.dry_run:
        p.error("the sparse GEMM needs CUDA; on CPU only --dry-run (emulated) runs")
    return args


def resnet50_convs(batch: int, res: int) -> list[dict]:
    """Distinct conv shapes of torchvision's ResNet-50 at (batch, 3, res, res), with counts."""
    model = torchvision.models.resnet50().to("meta")
    seen: Counter = Counter()
    first: dict = {}

    def hook(m, inputs, output):
        x = inputs[0]
        key = (
            m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
            tuple(x.shape[2:]), tuple(output.shape[2:]),
        )  # fmt: skip
        seen[key] += 1
        first.setdefault(key, m)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.empty(batch, 3, res, res, device="meta"))
    for h in hooks:
        h.remove()
    rows = []
    for (ci, co, k, s, _pad, hw, out), n in seen.items():
        positions = batch * out[0] * out[1]
        name = f"conv {co}x{ci}x{k[0]}x{k[1]} s{s[0]} @{hw[0]}"
        rows.append(dict(layer=name, count=n, co=co, k=ci * k[0] * k[1], p=positions))
    return rows


def vit_b_mlps(batch: int) -> list[dict]:
    tokens = 197 * batch
    return [
        dict(layer="vit_b fc1 3072x768", count=12, co=3072, k=768, p=tokens),
        dict(layer="vit_b fc2 768x3072", count=12, co=768, k=3072, p=tokens),
    ]


def vit_l_mlps(batch: int) -> list[dict]:
    tokens = 197 * batch
    return [
        dict(layer="vit_l fc1 4096x1024", count=24, co=4096, k=1024, p=tokens),
        dict(layer="vit_l fc2 1024x4096", count=24, co=1024, k=4096, p=tokens),
    ]


def host_us(fn, device: torch.device, reps: int) -> float:
    """Host microseconds per eager call: ``reps`` calls enqueued back to back (after two
    warm-up calls), timed on the host clock without waiting for the GPU in between."""
    fn()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    t1 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e6 * (t1 - t0) / reps


def gemms(row: dict) -> list[tuple[str, int, int, int]]:
    """(eq, M, K, N) of Eq. 1-3 for one layer (see the module docstring)."""
    co, k, p = row["co"], row["k"], row["p"]
    return [("eq1", co, k, p), ("eq2", k, co, p), ("eq3", co, p, k)]


def bench_one(eq, m, k, n, gemm, device, reps, dtype, host=None) -> dict:
    """Dense, sparse, compress and mask times (ms) of one (M, K, N) GEMM.

    ``*_ms``: GPU time (a CUDA-graph replay, :func:`fst.ops.gputime.graph_ms`); ``*_eager_ms``:
    one eager call with its host work (:func:`fst.ops.gputime.time_ms`). ``host``: gemms by
    name (``torch``, ``cached``) whose host microseconds per call are measured too.
    """
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=device).to(dtype)
    bt = torch.randn(n, k, generator=g, device=device).to(dtype)  # B = bt.t(): column-major
    b = bt.t()
    a_sparse = a * nm_mask(a, dim=1)
    packed = gemm.compress(a_sparse)
    work = {
        "dense": lambda: torch.mm(bt, a.t()),
        "sparse": lambda: gemm.mm(packed, b, transpose_result=True),
        "mask": lambda: nm_mask(a, dim=1),
        "compress": lambda: gemm.compress(a_sparse),
    }
    if eq == "eq3":  # fst's exact halved weight gradient: the same GEMM over half the positions
        half = k // 2
        work["half"] = lambda: torch.mm(bt[:, :half], a[:, :half].t())
    out = {}
    for name, fn in work.items():
        out[f"{name}_ms"] = graph_ms(fn, device, reps)
        if name in ("dense", "sparse"):
            out[f"{name}_eager_ms"] = time_ms(fn, device, reps)
    if host:
        hreps = max(reps, 20) if device.type == "cuda" else reps
        out["dense_host_us"] = host_us(work["dense"], device, hreps)
        out["compress_host_us"] = host_us(work["compress"], device, hreps)
        for name, g in host.items():
            p = g.compress(a_sparse)
            out[f"{name}_host_us"] = host_us(
                lambda g=g, p=p: g.mm(p, b, transpose_result=True), device, hreps
            )
            out[f"{name}_driver"] = getattr(g, "driver_used", g.name)
    return out


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    gemm = EmulatedGemm() if args.dry_run else CusparseltGemm(search_alg=args.search_alg)
    if args.dry_run:
        host = {"torch": EmulatedGemm(), "cached": EmulatedGemm()}
    else:
        host = {
            "torch": CusparseltGemm(search_alg=args.search_alg, driver="torch"),
            "cached": CusparseltGemm(search_alg=args.search_alg, driver="auto"),
        }
    dtype = torch.bfloat16
    layers = []
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if "resnet50" in models:
        layers += resnet50_convs(args.batch, args.res)
    if "vit_b" in models:
        layers += vit_b_mlps(args.batch)
    if "vit_l" in models:
        layers += vit_l_mlps(args.batch)
    if args.limit:
        layers = layers[: args.limit]

    rows = []
    header = (
        "| layer | n | GEMM | M | K | N | dense ms | sparse ms | speed-up | compress ms | "
        "mask ms | half ms | dense eager ms | sparse eager ms |"
    )
    lines = [header, "|---" * 14 + "|"]
    print(header, flush=True)
    for layer in layers:
        for eq, m, k, n in gemms(layer):
            r = dict(layer=layer["layer"], count=layer["count"], gemm=eq, m=m, k=k, n=n)
            try:
                r.update(bench_one(eq, m, k, n, gemm, device, args.reps, dtype, host))
            except Exception as e:  # one shape failing must not lose the others
                r["error"] = f"{type(e).__name__}: {e}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(r)
            line = _row_md(r)
            lines.append(line)
            print(line, flush=True)

    totals = {}
    for eq in ("eq1", "eq2", "eq3", "all"):
        sel = [r for r in rows if "error" not in r and (eq == "all" or r["gemm"] == eq)]
        for col in (
            "dense_ms",
            "sparse_ms",
            "compress_ms",
            "mask_ms",
            "dense_eager_ms",
            "sparse_eager_ms",
        ):
            totals[f"{eq}_{col}"] = round(sum(r[col] * r["count"] for r in sel), 4)
        if totals[f"{eq}_sparse_ms"]:
            totals[f"{eq}_speedup"] = round(totals[f"{eq}_dense_ms"] / totals[f"{eq}_sparse_ms"], 4)
    eq3 = [r for r in rows if r["gemm"] == "eq3" and "half_ms" in r]
    totals["eq3_half_ms"] = round(sum(r["half_ms"] * r["count"] for r in eq3), 4)
    lines += [
        "",
        "| GEMMs (weighted by count) | dense ms | sparse ms | speed-up | compress ms | mask ms "
        "| dense eager ms | sparse eager ms |",
    ]
    lines.append("|---" * 8 + "|")
    for eq in ("eq1", "eq2", "eq3", "all"):
        lines.append(
            f"| {eq} | {totals[f'{eq}_dense_ms']:.3f} | {totals[f'{eq}_sparse_ms']:.3f} | "
            f"{totals.get(f'{eq}_speedup', float('nan')):.3f} | "
            f"{totals[f'{eq}_compress_ms']:.3f} | {totals[f'{eq}_mask_ms']:.3f} | "
            f"{totals[f'{eq}_dense_eager_ms']:.3f} | {totals[f'{eq}_sparse_eager_ms']:.3f} |"
        )
    lines.append(
        f"\nfst's halved Eq. 3 (dense, half the positions): {totals['eq3_half_ms']:.3f} ms"
    )
    lines += host_table(rows)
    print("\n".join(lines[len(rows) + 2 :]))

    result = {
        "script": "bench_gemm",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cusparselt": cusparselt_version(),
        "cpu": platform.processor() or platform.machine(),
        "batch": args.batch,
        "res": args.res,
        "dtype": "bfloat16",
        "reps": args.reps,
        "search_alg": args.search_alg,
        "dry_run": args.dry_run,
        "gemm": gemm.name,
        "cached_driver": getattr(host["cached"], "driver_used", None),
        "cached_driver_failure": getattr(host["cached"], "driver_failure", None),
        **totals,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"# bench_gemm: {result['gpu'] or args.device}, batch {args.batch}, bf16"
    if args.search_alg:
        title += ", cuSPARSELt algorithm searched per GEMM"
    if args.dry_run:
        title += " (DRY RUN: emulated sparse GEMM, timings meaningless)"
    (out / "bench_gemm.md").write_text(title + "\n\n" + "\n".join(lines) + "\n")
    (out / "bench_gemm.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


def host_table(rows: list[dict]) -> list[str]:
    """Markdown lines: host microseconds per eager call, per GEMM, and their medians."""
    sel = [r for r in rows if "torch_host_us" in r]
    if not sel:
        return []
    out = [
        "",
        "Host us per eager call (enqueue time; issue 23 aims at <= 50 us per sparse GEMM):",
        "",
        "| layer | GEMM | dense | sparse torch._cslt | sparse cached plan | driver | compress |",
        "|---" * 7 + "|",
    ]
    for r in sel:
        out.append(
            f"| {r['layer']} | {r['gemm']} | {r['dense_host_us']:.1f} | "
            f"{r['torch_host_us']:.1f} | {r['cached_host_us']:.1f} | {r['cached_driver']} | "
            f"{r['compress_host_us']:.1f} |"
        )
    med = {
        c: sorted(r[c] for r in sel)[len(sel) // 2]
        for c in ("dense_host_us", "torch_host_us", "cached_host_us", "compress_host_us")
    }
    out.append(
        f"| median | | {med['dense_host_us']:.1f} | {med['torch_host_us']:.1f} | "
        f"{med['cached_host_us']:.1f} | | {med['compress_host_us']:.1f} |"
    )
    return out


def _row_md(r: dict) -> str:
    head = f"| {r['layer']} | {r['count']} | {r['gemm']} | {r['m']} | {r['k']} | {r['n']} |"
    if "error" in r:
        return head + f" error: {r['error'][:80]} | | | | | | | |"
    speed = r["dense_ms"] / r["sparse_ms"] if r["sparse_ms"] else float("nan")
    half = f"{r['half_ms']:.3f}" if "half_ms" in r else ""
    return head + (
        f" {r['dense_ms']:.3f} | {r['sparse_ms']:.3f} | {speed:.2f} | {r['compress_ms']:.3f} | "
        f"{r['mask_ms']:.3f} | {half} | {r['dense_eager_ms']:.3f} | {r['sparse_eager_ms']:.3f} |"
    )


if __name__ == "__main__":
    main()
