"""Time full training steps (forward, backward, SGD step) of a torchvision ResNet per strategy.

    python scripts/bench_step.py --model resnet18 --batch 32 --res 224 \\
        --strategies dense,fst --backend native --device cpu --steps 10
    python scripts/bench_step.py ... --compile          # compiled dense vs compiled fst, eager beside
    python scripts/bench_step.py --device cuda --amp bf16 --channels-last --model resnet50 \\
        --batch 256 --compile                            # the GPU set-up of issue 15

Every configuration (strategy, and eager or compiled with ``--compile``) is timed interleaved:
one step of each in turn every round, the order reversed every other round, so a noisy
machine slows all of them alike. ``ratio`` is the median over rounds of the step time over the
same round's ``dense`` step of the same mode (eager or compiled).

"Mask time" is the work the sparse layers add for their masks, timed once per round beside
the steps (so under the same load) as the layers run it: the Eq. 1 and Eq. 2 weights of every
sparse layer (S(W), S(W^T) or T(W), :func:`fst.ops.native.masked_weights`) and the IR half of
dY (:func:`fst.ops.native.ir_half`) on every fixed-rule conv's output-gradient shape; with
``--compile``, the same function compiled (inductor fuses it as it does inside the step).
``mask share`` = median mask time / median ``dense`` step of the same mode.

Threads: ``--threads`` (0: the cores this process may use, see :mod:`fst.threads`;
``FST_NUM_THREADS`` / ``OMP_NUM_THREADS`` override). The load average before and after is part
of the output: timings on a shared machine mean little without it.

Prints a table, then one JSON line (the last line) with ``<strategy>_ms``, ``ratio_<strategy>``
(and its interquartile range ``ratio_<strategy>_iqr``), ``mask_ms_<strategy>`` and
``mask_share_<strategy>`` for each strategy (suffix ``_compiled`` for compiled models, and
``compile_s_<strategy>``: seconds to compile and warm up), the thread count and the load.
``--out DIR`` also writes the table and the JSON to ``DIR/bench_step_<model>.md/.json``.

On a GPU (``--device cuda``) an entry of ``--strategies`` may name its backend
(``STRATEGY@BACKEND``), images/s and peak memory are added (``<entry>_img_s``,
``<entry>_peak_gib``), a compiled configuration whose warm-up fails is dropped with its error
(``failed`` in the JSON) and ``--summary`` prints each sparse24 model's per-layer kernels and
timings (where the time goes). ``--cuda-graph`` captures each configuration's whole step in a
CUDA graph after the warm-up and times its replays (no host work per step: eager PyTorch pays
cuSPARSELt's per-call plan and every small mask kernel's launch on the host), with the mask
time then GPU time too (:func:`fst.ops.gputime.graph_ms`). ``--profile`` appends a profile of
one eager step per configuration to the output. The issue-11 runs (``results/gpu/``):

    python scripts/bench_step.py --device cuda --model resnet50 --batch 256 --res 224 \
        --amp bf16 --channels-last --strategies dense,fst@native,fst@sparse24 --summary
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import fst
from fst.compile import MODES, compile_model
from fst.layers import SparseConv2d, sparse_layers
from fst.ops.gputime import graph_ms
from fst.ops.native import ir_half, masked_weights
from fst.threads import configure_threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default="resnet18", help="torchvision model name (resnet18, resnet50, ...)"
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--res", type=int, default=224, help="input resolution (square)")
    p.add_argument(
        "--strategies",
        default="dense,fst",
        help="comma-separated strategy keys, each optionally STRATEGY@BACKEND",
    )
    p.add_argument("--backend", default="native")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step per config each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: the cores this process may use; see fst/threads.py)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile'd models (compiled dense vs compiled sparse)",
    )
    p.add_argument("--compile-mode", choices=MODES, default="default")
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="capture each configuration's whole step (forward, backward, SGD) in one CUDA "
        "graph after the warm-up and time its replays: no host work per step; sparse24 then "
        "picks its kernels by GPU time (FST_SPARSE24_TIMING=graph)",
    )
    p.add_argument(
        "--profile", action="store_true", help="print the top ops of one step per configuration"
    )
    p.add_argument(
        "--summary", action="store_true", help="print fst.summary and kernel choices (sparse24)"
    )
    p.add_argument("--out", default=None, help="also write bench_step_<model>.md/.json here")
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in args.strategies:
        strategy, _, backend = s.partition("@")
        fst.STRATEGIES.get(strategy)  # fail early with the list of valid keys
        fst.BACKENDS.get(backend or args.backend)
    fst.BACKENDS.get(args.backend)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu")
    if args.cuda_graph and not args.device.startswith("cuda"):
        p.error("--cuda-graph captures CUDA graphs: it needs --device cuda")
    if args.cuda_graph and args.compile:
        p.error(
            "--cuda-graph and --compile are separate runs (--compile-mode reduce-overhead "
            "is the compiled step with CUDA graphs)"
        )
    if "dense" not in args.strategies:
        args.strategies.insert(0, "dense")  # ratios need it
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MaskWork:
    """The mask work of one model's sparse layers (see the module docstring), timed alone."""

    def __init__(
        self,
        model: nn.Module,
        device,
        compile_mode: str | None,
        graphed=False,
        dtype=None,
        cl=False,
    ):
        self.graphed = graphed
        self.layers = [m for _, m in sparse_layers(model) if not m.plan.is_dense]
        self.dys = []
        self.coefs = []
        for m in self.layers:
            if m.plan.weight_grad == "fixed" and isinstance(m, SparseConv2d):
                n, _, h, w = m.last_input_shape
                out = nn.functional.conv2d(
                    torch.empty(1, m.in_channels, h, w, device=device),
                    m.weight.detach(),
                    None,
                    m.stride,
                    m.padding,
                    m.dilation,
                ).shape
                dy = torch.randn(n, *out[1:], device=device, dtype=dtype)  # as autocast's dY
                fmt = torch.channels_last if cl else torch.contiguous_format
                self.dys.append(dy.contiguous(memory_format=fmt))
                self.coefs.append(m.plan.ir_coef)
        self.device = device
        self.fn = torch.compile(self._work, mode=compile_mode) if compile_mode else self._work

    def _work(self, weights, dys):
        out = [masked_weights(w, m.plan) for w, m in zip(weights, self.layers)]
        out += [ir_half(d, c, dim=3) for d, c in zip(dys, self.coefs)]
        return out

    def ms(self) -> float:
        if not self.layers:
            return 0.0
        weights = [m.weight.detach() for m in self.layers]
        if self.graphed:  # GPU time alone, as a step replayed in a CUDA graph pays it
            with torch.no_grad():
                return graph_ms(lambda: self.fn(weights, self.dys), self.device, reps=3, inner=1)
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.fn(weights, self.dys)
        sync(self.device)
        return 1e3 * (time.perf_counter() - t0)


class Runner:
    """One model + optimizer per configuration, all from the same initial weights.

    ``strategy`` is a table entry: ``STRATEGY`` (on ``--backend``) or ``STRATEGY@BACKEND``.
    """

    def __init__(self, args, strategy, state, device, compile_mode=None):
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graphed = args.cuda_graph
        torch.manual_seed(0)
        model = getattr(torchvision.models, args.model)(num_classes=1000)
        model.load_state_dict(state)
        key, _, backend = strategy.partition("@")
        self.backend = backend or args.backend
        fst.sparsify(model, key, self.backend)
        mf = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=mf).train()
        compile_model(self.model, compile_mode or False)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=7e-5)
        self.loss = nn.CrossEntropyLoss()
        self.device, self.amp, self.cl = device, args.amp, args.channels_last
        self.strategy, self.compile_mode = strategy, compile_mode
        self.name = strategy + ("+compile" if compile_mode else "")
        self.masks: MaskWork | None = None
        self.peak_bytes = 0

    def step(self, x, y):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.opt.zero_grad(set_to_none=True)
            self._work(x, y)
        if self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))

    def _work(self, x, y):
        """Forward, backward, SGD step (gradients already zeroed or set to None)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        # no autocast weight cache under CUDA graphs (its casts must be part of the graph)
        with torch.autocast(
            self.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=not self.graphed
        ):
            loss = self.loss(self.model(x), y)
        loss.backward()
        self.opt.step()

    def capture(self, x, y):
        """Capture one whole step (after eager warm-up steps) as a CUDA graph; replayed by step."""
        cur = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
            for _ in range(2):
                self.opt.zero_grad(set_to_none=True)
                self._work(x, y)
        cur.wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._work(x, y)
        self.graph = graph

    def mask_ms(self) -> float:
        if self.masks is None:  # after a step: the layers know their input shapes
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
            self.masks = MaskWork(
                self.model, self.device, self.compile_mode, self.graphed, dtype, self.cl
            )
            self.masks.ms()  # compiles / warms up
        return self.masks.ms()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv=None):
    args = parse_args(argv)
    configure_threads(args.threads or None)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every entry alike: cuDNN's fastest algorithms
    if args.cuda_graph:  # no host work per step: choose sparse24 kernels by GPU time alone
        fst.BACKENDS.get("sparse24").timing = "graph"
    load_start = loadavg()
    torch.manual_seed(0)
    state = getattr(torchvision.models, args.model)(num_classes=1000).state_dict()
    modes = [None] + ([args.compile_mode] if args.compile else [])
    runners = [Runner(args, s, state, device, mode) for mode in modes for s in args.strategies]
    x = torch.randn(args.batch, 3, args.res, args.res, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    compile_s, failed = {}, {}
    for r in list(runners):
        t0 = time.perf_counter()
        try:
            for _ in range(args.warmup):
                r.step(x, y)
            sync(device)
            if args.cuda_graph:
                r.capture(x, y)
                r.step(x, y)
                sync(device)
            if args.warmup:  # compile / warm up the mask work too (it needs one step's shapes)
                r.mask_ms()
        except Exception as e:  # e.g. a model torch.compile cannot trace: report, time the rest
            if not (r.compile_mode or args.cuda_graph):
                raise
            failed[r.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"{r.name}: dropped, warm-up failed: {failed[r.name]}", flush=True)
            runners.remove(r)
            continue
        if r.compile_mode and args.warmup:
            compile_s[r.name] = time.perf_counter() - t0
            print(f"{r.name}: compiled and warmed up in {compile_s[r.name]:.0f} s", flush=True)
    times = {r.name: [] for r in runners}
    masks = {r.name: [] for r in runners}
    for i in range(args.steps):
        order = runners if i % 2 == 0 else runners[::-1]  # alternate order against drift
        for r in order:
            sync(device)
            t0 = time.perf_counter()
            r.step(x, y)
            sync(device)
            times[r.name].append(time.perf_counter() - t0)
        for r in order:
            masks[r.name].append(r.mask_ms())
        print(
            f"round {i + 1}/{args.steps}: "
            + ", ".join(f"{s} {1e3 * t[-1]:.0f} ms" for s, t in times.items()),
            flush=True,
        )

    result = {
        "model": args.model,
        "device": args.device,
        "batch": args.batch,
        "res": args.res,
        "backend": args.backend,
        "steps": args.steps,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile_mode if args.compile else False,
        "cuda_graph": args.cuda_graph,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    cuda = device.type == "cuda"
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(device)
        result.update(_cuda_versions())
    if failed:
        result["failed"] = failed
    lines = [
        f"{args.model} batch {args.batch} res {args.res} on {args.device} ({args.backend} "
        f"backend, {torch.get_num_threads()} threads, {args.steps} interleaved rounds, medians"
        f"{', whole steps replayed as CUDA graphs' if args.cuda_graph else ''}; "
        f"load average {load_start} -> {result['loadavg_end']})"
    ]
    w = max([16] + [len(r.name) for r in runners])
    header = f"{'config':<{w}} {'ms/step':>9} {'ratio':>7} {'ratio IQR':>13} {'mask ms':>8}"
    lines.append(
        header + f" {'mask share':>10}" + (f" {'img/s':>8} {'peak GiB':>8}" if cuda else "")
    )
    for r in runners:
        dense = next(
            d for d in runners if d.strategy == "dense" and d.compile_mode == r.compile_mode
        )
        per_round = [t / td for t, td in zip(times[r.name], times[dense.name])]
        ratio = statistics.median(per_round)
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else [ratio] * 3
        ms = 1e3 * statistics.median(times[r.name])
        mask = statistics.median(masks[r.name])
        share = mask / (1e3 * statistics.median(times[dense.name]))
        iqr = f"{q[0]:.3f}-{q[2]:.3f}"
        line = f"{r.name:<{w}} {ms:>9.1f} {ratio:>7.3f} {iqr:>13} {mask:>8.1f} {100 * share:>9.2f}%"
        key = r.strategy + ("_compiled" if r.compile_mode else "")
        result[f"{key}_ms"] = round(ms, 2)
        result[f"ratio_{key}"] = round(ratio, 4)
        result[f"ratio_{key}_iqr"] = [round(q[0], 4), round(q[2], 4)]
        result[f"mask_ms_{key}"] = round(mask, 2)
        result[f"mask_share_{key}"] = round(share, 4)
        if r.name in compile_s:
            result[f"compile_s_{r.strategy}"] = round(compile_s[r.name], 1)
        if cuda:
            img_s, peak = args.batch / (ms / 1e3), r.peak_bytes / 2**30
            line += f" {img_s:>8.1f} {peak:>8.2f}"
            result[f"{key}_img_s"] = round(img_s, 1)
            result[f"{key}_peak_gib"] = round(peak, 3)
        lines.append(line)
    print("\n" + "\n".join(lines))
    details = _sparse24_details(runners) if args.summary else ""
    if details:
        print(details)

    profiles = []
    if args.profile:
        for r in runners:
            graph, r.graph = r.graph, None  # profile an eager step: a graph replay hides its ops
            with torch.profiler.profile() as prof:
                r.step(x, y)
            r.graph = graph
            sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            profiles += [f"\n== profile of one eager {r.name} step ==", "```",
                         prof.key_averages().table(sort_by=sort, row_limit=20), "```"]  # fmt: skip
        print("\n".join(profiles))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python scripts/bench_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
        md = ["```", *lines, "```", "", f"command: `{cmd}`"]
        if details:
            md += ["", details]
        md += profiles
        (out / f"bench_step_{args.model}.md").write_text("\n".join(md) + "\n")
        (out / f"bench_step_{args.model}.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    return result


def _cuda_versions() -> dict:
    from fst.ops.cslt import cusparselt_version

    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cusparselt": cusparselt_version(),
    }


def _sparse24_details(runners) -> str:
    """Per-layer kernels of every sparse24 model and the per-shape timing table."""
    out = []
    for r in runners:
        if r.backend == "sparse24":
            out += [f"\n== {r.name}: fst.summary ==", str(fst.summary(r.model))]
    if out:
        out += ["\n== sparse24 kernel choices (ms per kernel, one-time timing) ==",
                fst.BACKENDS.get("sparse24").choices_table()]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
