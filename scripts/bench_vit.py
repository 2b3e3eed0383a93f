"""Time 2:4 sparse training of vision transformers: MLP block, one block, a whole AdamW step.

    # the ViT-B/16 MLP block (768 -> 3072 -> GELU -> 768 on [B, 197, 768]), forward + backward
    python scripts/bench_vit.py --what mlp --backend sparse24 --strategy mvue --device cuda
    # one ViT-B transformer block (attention stays dense), forward + backward
    python scripts/bench_vit.py --what block --backend sparse24 --strategy mvue --device cuda
    # a whole DeiT-S training step (AdamW, bf16 autocast), batch 128 at 224 px
    python scripts/bench_vit.py --what step --model deit_small_patch16_224 --batch 128 \\
        --backend sparse24 --strategy fst --device cuda
    # issue 23: ViT-L/16 MLP, dense against three strategies, eager and as CUDA graphs, with
    # the where-the-time-goes breakdown
    python scripts/bench_vit.py --what mlp --model vit_large_patch16_224 --batch 64 \\
        --backend sparse24 --strategies fst,fst_noir,mvue --modes eager,graph --breakdown
    # CPU smoke test of every code path (sparse24 emulated), seconds
    python scripts/bench_vit.py --device cpu --tiny --what step --backend sparse24 \\
        --strategies fst,mvue --modes eager,compile --breakdown

Each case runs the same module once per variant: ``dense`` (plain ``nn.Linear``, no fst code)
and every strategy of ``--strategies`` (``STRATEGY`` on ``--backend``, or ``STRATEGY@BACKEND``;
default: ``--strategy``), made with ``fst.sparsify`` (the blocks' Linear layers get the ViT's
token layout, so Eq. 3 pairs patches inside grid rows and keeps the class token dense). All in
``--dtype`` (bf16 by default: autocast for the step, bf16 weights and inputs for the MLP and
block cases). Each variant runs in every mode of ``--modes``, the same mode for dense and sparse:

- ``eager``: plain PyTorch, host work included (what eager training pays);
- ``compile``: :func:`fst.compile.compile_model` (``torch.compile``, default mode) on the module;
- ``graph``: the whole iteration (forward, backward and, for the step, the optimizer) captured
  once as a CUDA graph after the warm-up and replayed (no host work; CUDA only).

Iterations are timed interleaved (one of each variant in turn, every round, order alternating)
so that a noisy machine slows all alike, with synchronisation around each; ``dense/this`` (> 1:
faster than dense) is the ratio of medians within the mode. The MLP and block cases mark their
weights changed before every iteration (their version counter: as an optimizer step would), so
the sparse variants compress their weight operands each iteration as training does.

``--breakdown`` (where the time goes) times, for every distinct Linear shape of the blocks on
this batch, each piece in isolation as GPU time (:func:`fst.ops.gputime.graph_ms`) and sums
them over the model's layers: Eq. 1 and Eq. 2 dense (cuBLAS) and 2:4 (cuSPARSELt, compressed
operand), Eq. 3 dense, fst's halved Eq. 3 unfused (IR half + gather + cuBLAS, ``native``) and
fused (:mod:`fst.ops.eq3_triton`), mvue's Eq. 3, the IR half alone, the masks S(W) and S(W^T),
and the compression of the two weight operands. On CUDA it also profiles one eager iteration of
each variant and sums GPU time by kernel family (cuSPARSELt, cuBLAS/CUTLASS GEMMs, fst's Triton
kernels, attention, the rest).

Without a GPU it runs on the CPU, where only the code paths are exercised (``sparse24`` through
its emulation; no sparse tensor cores): ``--tiny`` shrinks everything to seconds
(``vit_tiny_patch16_224`` at 32 px, 1 block, batch 2, fp32, 2 iterations).

Prints a table, then one JSON line (the last line) with ``dense_ms``, ``sparse_ms`` and
``speedup`` of the first variant in the first mode, every ``rows`` entry and the ``breakdown``.
``--out DIR`` also writes ``DIR/bench_vit_<what>.md`` with the command, machine, commit and date
(e.g. ``--out results/gpu``; by default nothing is written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import fst  # noqa: E402
from fst.analysis import report  # noqa: E402
from fst.compile import compile_model  # noqa: E402
from fst.ops.gputime import graph_ms  # noqa: E402
from fst.tokens import TokenLayout  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = ("eager", "compile", "graph")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--what", choices=["mlp", "block", "step"], default="mlp")
    p.add_argument(
        "--model",
        default=None,
        help="timm ViT / DeiT name (default: vit_base_patch16_224 for mlp/block, "
        "deit_small_patch16_224 for step)",
    )
    p.add_argument("--batch", type=int, default=None, help="default: 64 (mlp/block), 128 (step)")
    p.add_argument("--res", type=int, default=224, help="image size (tokens: (res/patch)^2 + 1)")
    p.add_argument("--depth", type=int, default=None, help="blocks (default: the model's)")
    p.add_argument("--strategy", default="mvue", help="strategy key of fst.STRATEGIES")
    p.add_argument(
        "--strategies",
        default=None,
        help="comma-separated STRATEGY or STRATEGY@BACKEND, each timed against dense "
        "(default: --strategy)",
    )
    p.add_argument(
        "--backend", default="native", help="key of fst.BACKENDS (sparse24: the GPU backend)"
    )
    p.add_argument(
        "--modes", default="eager", help=f"comma-separated, of {', '.join(MODES)} (graph: CUDA)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--steps", type=int, default=20, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations per variant")
    p.add_argument("--breakdown", action="store_true", help="where the time goes (see above)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="CPU smoke test: vit_tiny at 32 px, 1 block, batch 2, fp32, 2 iterations",
    )
    p.add_argument("--out", default=None, help="directory for bench_vit_<what>.md (optional)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.res, args.depth, args.batch = "vit_tiny_patch16_224", 32, 1, 2
        args.steps, args.warmup, args.dtype = 2, 1, "fp32"
    args.variants = [v.strip() for v in (args.strategies or args.strategy).split(",") if v.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.mode_list:
        if m not in MODES:
            p.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu")
    if "graph" in args.mode_list and not args.device.startswith("cuda"):
        p.error("--modes graph captures CUDA graphs: it needs --device cuda (or drop graph)")
    args.emulate = False
    for v in args.variants:
        key, _, backend = v.partition("@")
        backend = backend or args.backend
        if key not in fst.STRATEGIES:
            p.error(f"--strategy {key!r}; valid: {', '.join(fst.STRATEGIES.keys())}")
        if backend not in fst.BACKENDS:
            p.error(
                f"--backend {backend!r} is not available in this checkout; registered "
                f"backends: {', '.join(sorted(fst.BACKENDS.keys()))}. The 2:4 GPU backend "
                "'sparse24' (fst/ops/sparse24.py) comes with the GPU work; use a checkout that "
                "has it, or --backend native to time the masked dense kernels"
            )
        if getattr(fst.BACKENDS.get(backend), "needs_cuda", False):
            if args.device.startswith("cuda"):
                continue
            if not args.tiny:
                p.error(
                    f"--backend {backend} runs on CUDA only; use --device cuda (or --tiny on "
                    "CPU, which emulates its sparse GEMMs)"
                )
            args.emulate = True
    args.model = args.model or (
        "deit_small_patch16_224" if args.what == "step" else "vit_base_patch16_224"
    )
    args.batch = args.batch or (128 if args.what == "step" else 64)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_vit(args, depth: int | None = None, meta: bool = False):
    """The timm model of ``args`` (``depth``: fewer blocks; ``meta``: shapes only, no memory,
    no initialisation: for reading the layout and layer shapes of big models quickly)."""
    import timm

    depth = depth or args.depth
    extra = {} if depth is None else {"depth": depth}
    with torch.device("meta") if meta else contextlib.nullcontext():
        return timm.create_model(
            args.model, pretrained=False, img_size=args.res, num_classes=1000, **extra
        )


def split_variant(variant: str, backend: str) -> tuple[str, str]:
    key, _, b = variant.partition("@")
    return key, b or backend


class Case:
    """One variant (dense or sparse) of the timed workload, ready to ``run()`` an iteration."""

    def __init__(self, args, variant: str | None, device: torch.device, mode: str = "eager"):
        torch.manual_seed(0)
        dtype = DTYPES[args.dtype]
        self.device, self.what, self.mode = device, args.what, mode
        self.variant = variant or "dense"
        self.graph: torch.cuda.CUDAGraph | None = None
        vit = build_vit(args, depth=None if args.what == "step" else 1)  # mlp/block: block 0
        self.tokens = TokenLayout(vit.num_prefix_tokens, tuple(vit.patch_embed.grid_size))
        self.embed_dim = vit.embed_dim
        if args.what == "step":
            self.module = vit
            if variant:  # also gives the blocks' Linear layers the ViT's token layout
                fst.sparsify(vit, *split_variant(variant, args.backend))
            self.module.to(device).train()
            # capturable: the step (its step counter too) can be replayed as a CUDA graph
            capturable = mode == "graph"
            self.opt = torch.optim.AdamW(vit.parameters(), lr=1e-4, capturable=capturable)
            self.x = torch.randn(args.batch, 3, args.res, args.res, device=device)
            self.y = torch.randint(0, 1000, (args.batch,), device=device)
            self.amp = dtype if dtype != torch.float32 and device.type == "cuda" else None
        else:
            block = vit.blocks[0]
            self.module = block.mlp if args.what == "mlp" else block
            if variant:
                fst.sparsify(self.module, *split_variant(variant, args.backend))
                for m in self.module.modules():
                    if isinstance(m, nn.Linear):
                        m.token_layout = self.tokens
            self.module.to(device=device, dtype=dtype).train()
            self.x = torch.randn(
                args.batch, self.tokens.num_tokens, vit.embed_dim, device=device, dtype=dtype
            ).requires_grad_(True)
            self.dy = torch.randn_like(self.x)
        self.weights = [p for p in self.module.parameters() if p.dim() == 2]
        del vit
        if mode == "compile":
            compile_model(self.module, "default")

    def _work(self) -> None:
        if self.what == "step":
            amp = self.amp is not None
            # no autocast weight cache in CUDA graphs: its casts must be part of the graph
            with torch.autocast(
                self.device.type, dtype=self.amp, enabled=amp, cache_enabled=self.graph is None
            ):
                loss = F.cross_entropy(self.module(self.x), self.y)
            loss.backward()
            self.opt.step()
            return
        self.module(self.x).backward(self.dy)

    def _zero(self) -> None:
        if self.what == "step":
            self.opt.zero_grad(set_to_none=True)
            return
        self.x.grad = None
        for p in self.module.parameters():
            p.grad = None
        for w in self.weights:  # as after an optimizer step: weight operands are stale
            torch.autograd.graph.increment_version(w)

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        self._zero()
        self._work()

    def capture(self) -> None:
        """Capture one whole iteration as a CUDA graph (after the eager warm-up)."""
        cur = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
            for _ in range(2):
                self._zero()
                self._work()
        cur.wait_stream(side)
        self._zero()
        graph = torch.cuda.CUDAGraph()
        self.graph = graph  # _work reads it: autocast without its cache
        with torch.cuda.graph(graph):
            self._work()


# ----------------------------------------------------------------------------------------------
# where the time goes
# ----------------------------------------------------------------------------------------------


def linear_shapes(args) -> list[tuple[str, int, int, int]]:
    """(name, out, in, count) of the Linear layers the case runs (one block for mlp/block)."""
    vit = build_vit(args, meta=True)
    blocks = list(vit.blocks)[: 1 if args.what != "step" else None]
    seen: dict[tuple[str, int, int], int] = {}
    for blk in blocks:
        for name, m in blk.named_modules():
            if isinstance(m, nn.Linear) and (args.what != "mlp" or name.startswith("mlp")):
                key = (name, m.out_features, m.in_features)
                seen[key] = seen.get(key, 0) + 1
    return [(n, o, i, c) for (n, o, i), c in seen.items()]


def breakdown(args, device: torch.device) -> dict:
    """GPU ms per piece of the Linear layers' work, summed over the layers (module docstring)."""
    from fst.ops.cslt import CusparseltGemm, EmulatedGemm

    dtype = DTYPES[args.dtype]
    tokens = TokenLayout(*_layout_of(args))
    t = tokens.num_tokens
    gemm = CusparseltGemm(search_alg=True) if device.type == "cuda" else EmulatedGemm()
    fst_plan, mvue_plan = fst.STRATEGIES.get("fst"), fst.STRATEGIES.get("mvue")
    reps = 5 if device.type == "cuda" else 1
    rows, totals = [], {}
    for name, o, i, count in linear_shapes(args):
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(args.batch, t, i, generator=g, device=device).to(dtype)
        dy = torch.randn(args.batch, t, o, generator=g, device=device).to(dtype)
        w = torch.randn(o, i, generator=g, device=device)
        work = _pieces(gemm, x, dy, w, tokens, fst_plan, mvue_plan)
        row = {"layer": name, "out": o, "in": i, "count": count}
        for piece, fn in work.items():
            try:
                row[piece] = graph_ms(fn, device, reps=reps, inner=2)
            except Exception as e:  # one piece failing must not lose the others
                row[piece] = None
                row.setdefault("errors", {})[piece] = f"{type(e).__name__}: {e}"[:200]
            if row[piece] is not None:
                totals[piece] = totals.get(piece, 0.0) + row[piece] * count
        rows.append(row)
        del x, dy, w, work
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "totals_ms": {k: round(v, 4) for k, v in totals.items()}}


def _pieces(gemm, x, dy, w, tokens, fst_plan, mvue_plan) -> dict:
    """The timed pieces of one Linear layer (``x`` [B, T, in], ``dy`` [B, T, out], ``w``)."""
    from fst.ops import eq3, eq3_triton
    from fst.rules import weight_operands

    dtype, (o, i) = x.dtype, w.shape
    wf, wb = weight_operands(w, fst_plan)
    wf, wb = wf.to(dtype), wb.to(dtype)
    p1, p2 = gemm.compress(wf), gemm.compress(wb.t().contiguous())
    x2, dy2 = x.view(-1, i), dy.view(-1, o)
    work = {
        "eq1 dense": lambda: F.linear(x2, wf),
        "eq1 2:4": lambda: gemm.mm(p1, x2.t(), transpose_result=True),
        "eq2 dense": lambda: dy2 @ wb,
        "eq2 2:4": lambda: gemm.mm(p2, dy2.t(), transpose_result=True),
        "eq3 dense": lambda: dy2.t() @ x2,
        "eq3 fst unfused": lambda: eq3.linear_weight_grad(dy, x, fst_plan, {}, tokens),
        "eq3 mvue": lambda: eq3.linear_weight_grad(dy, x, mvue_plan, {}, tokens),
        "masks S(W), S(W^T)": lambda: weight_operands(w, fst_plan),
        "compress 2 operands": lambda: (gemm.compress(wf), gemm.compress(wb.t().contiguous())),
    }
    if tokens.prefix:
        grid_dy = dy[:, tokens.prefix :].reshape(dy.shape[0], *tokens.grid, o)
        work["IR half alone"] = lambda: eq3.ir_half(grid_dy, 1.0, dim=-2)
    if eq3_triton.available(x):
        work["eq3 fst fused"] = lambda: eq3_triton.fixed_weight_grad(dy, x, 1.0, tokens)
    return work


def breakdown_table(bd: dict) -> str:
    pieces = list(bd["totals_ms"])
    lines = ["| piece | " + " | ".join(r["layer"] for r in bd["rows"]) + " | all layers |"]
    lines.append("|---" * (len(bd["rows"]) + 2) + "|")
    for piece in pieces:
        cells = []
        for r in bd["rows"]:
            v = r.get(piece)
            cells.append("" if v is None else f"{v:.3f} x{r['count']}")
        lines.append(f"| {piece} | " + " | ".join(cells) + f" | {bd['totals_ms'][piece]:.3f} |")
    tot = bd["totals_ms"]
    dense = sum(tot.get(k, 0) for k in ("eq1 dense", "eq2 dense", "eq3 dense"))
    sparse = sum(
        tot.get(k, 0) for k in ("eq1 2:4", "eq2 2:4", "masks S(W), S(W^T)", "compress 2 operands")
    )
    eq3 = tot.get("eq3 fst fused", tot.get("eq3 fst unfused", 0))
    lines.append("")
    lines.append(
        f"Linear layers, GPU ms (pieces alone): dense Eq. 1-3 {dense:.3f}; fst on 2:4 "
        f"(Eq. 1-2 2:4, Eq. 3 halved {'fused' if 'eq3 fst fused' in tot else 'unfused'}, "
        f"masks, compression) {sparse + eq3:.3f}: {dense / max(sparse + eq3, 1e-9):.3f}x"
    )
    return "\n".join(lines)


FAMILIES = (  # (family, substrings of the kernel name, lower case), first match wins
    ("cuSPARSELt 2:4 GEMM", ("sparse", "cusparselt", "sp_gemm", "spmma")),
    ("fst Triton (Eq. 3, masks)", ("_eq3_kernel", "_nm24_kernel")),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("dense GEMM (cuBLAS/CUTLASS)", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "matmul")),
    ("triton (inductor)", ("triton",)),
)


def profile_families(case: Case) -> dict[str, float]:
    """GPU ms of one eager iteration of ``case``, by kernel family (:data:`FAMILIES`)."""
    from torch.profiler import ProfilerActivity, profile

    graph, case.graph = case.graph, None  # profile an eager iteration: a replay hides its ops
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            case.run()
            sync(case.device)
    finally:
        case.graph = graph
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not us or ev.key.startswith("ProfilerStep"):
            continue
        name = ev.key.lower()
        fam = next((f for f, subs in FAMILIES if any(s in name for s in subs)), "other")
        out[fam] = out.get(fam, 0.0) + us / 1e3
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


# ----------------------------------------------------------------------------------------------


def time_mode(args, device, mode) -> tuple[dict[str, float], dict[str, Case]]:
    """Median ms per iteration of every variant in ``mode``, timed interleaved."""
    cases = {"dense": Case(args, None, device, mode)}
    for v in args.variants:
        cases[v] = Case(args, v, device, mode)
    for c in cases.values():
        for _ in range(args.warmup):
            c.run()
        if mode == "graph":
            c.capture()
    sync(device)
    times = {k: [] for k in cases}
    for i in range(args.steps):
        order = list(cases.items())
        for name, c in order if i % 2 == 0 else order[::-1]:  # alternate against drift
            sync(device)
            t0 = time.perf_counter()
            c.run()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}, cases


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    backend = fst.BACKENDS.get("sparse24") if "sparse24" in fst.BACKENDS else None
    emulate = (
        backend.emulate() if args.emulate and backend is not None else contextlib.nullcontext()
    )
    rows, families = [], {}
    with emulate:
        for mode in args.mode_list:
            if backend is not None:  # a replay has no host work: pick kernels by GPU time
                backend.timing = "graph" if mode == "graph" else "eager"
                backend.reset()
            med, cases = time_mode(args, device, mode)
            for name, ms in med.items():
                rows.append(
                    {
                        "mode": mode,
                        "variant": name,
                        "backend": "torch"
                        if name == "dense"
                        else split_variant(name, args.backend)[1],
                        "ms": round(ms, 4),
                        "speedup": round(med["dense"] / ms, 4),
                    }
                )
            if args.breakdown and device.type == "cuda" and mode == args.mode_list[0]:
                families = {name: profile_families(c) for name, c in cases.items()}
            del cases
            if device.type == "cuda":
                torch.cuda.empty_cache()
        bd = breakdown(args, device) if args.breakdown else None
    what = {
        "mlp": f"{args.model} MLP block (fc1 -> GELU -> fc2), forward + backward",
        "block": f"{args.model} transformer block (attention dense), forward + backward",
        "step": f"{args.model} training step (AdamW, {args.dtype} autocast on CUDA)",
    }[args.what]
    tokens = TokenLayout(*_layout_of(args))
    head = (
        f"\n{what}\nbatch {args.batch} x {tokens.num_tokens} tokens ({tokens.describe()}), "
        f"{args.dtype}, {args.device}{' (sparse24 emulated)' if args.emulate else ''}, "
        f"{args.steps} interleaved iterations, median"
    )
    print(head)
    table = report.markdown_table(
        rows,
        ["mode", "variant", "backend", "ms", "speedup"],
        ["mode", "variant", "backend", "ms/iter", "dense/this"],
    )
    print(table)
    text = table
    if bd is not None:
        bt = breakdown_table(bd)
        print("\nWhere the time goes (Linear layers, each piece alone, GPU ms):\n" + bt)
        text += "\n\nWhere the time goes (Linear layers, each piece alone, GPU ms):\n\n" + bt
    if families:
        fam_rows = [{"variant": k, **v} for k, v in families.items()]
        cols = sorted({c for v in families.values() for c in v}, key=lambda c: c)
        ft = report.markdown_table(fam_rows, ["variant", *cols], ["variant", *cols])
        print("\nOne eager iteration, GPU ms by kernel family (torch.profiler):\n" + ft)
        text += "\n\nOne eager iteration, GPU ms by kernel family (torch.profiler):\n\n" + ft
    first = next(r for r in rows if r["variant"] != "dense")
    dense = next(r for r in rows if r["variant"] == "dense" and r["mode"] == first["mode"])
    result = {
        "what": args.what,
        "model": args.model,
        "batch": args.batch,
        "tokens": tokens.num_tokens,
        "strategy": first["variant"],
        "strategies": args.variants,
        "backend": args.backend,
        "modes": args.mode_list,
        "dtype": args.dtype,
        "device": args.device,
        "emulated": args.emulate,
        "steps": args.steps,
        "dense_ms": dense["ms"],
        "sparse_ms": first["ms"],
        "speedup": first["speedup"],
        "rows": rows,
        "torch": torch.__version__,
    }
    if bd is not None:
        result["breakdown"] = bd
    if families:
        result["kernel_families_ms"] = families
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        fused = getattr(backend, "fused_eq3", None)
        result["sparse24"] = {
            "fused_eq3": fused,
            "driver": getattr(getattr(backend, "gemm", None), "driver_used", None),
            "driver_failure": getattr(getattr(backend, "gemm", None), "driver_failure", None),
        }
    if args.out:
        path = Path(args.out) / f"bench_vit_{args.what}.md"
        report.write_markdown(path, f"ViT 2:4 benchmark: {args.what}", head.strip() + "\n\n" + text)
        print(f"wrote {path}")
    print(json.dumps(result))
    return result


def _layout_of(args) -> tuple[int, tuple[int, int]]:
    vit = build_vit(args, meta=True)
    return vit.num_prefix_tokens, tuple(vit.patch_embed.grid_size)


if __name__ == "__main__":
    main()
