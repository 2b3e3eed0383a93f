"""Time full training steps (forward, backward, SGD step) of a torchvision ResNet per strategy.

    python scripts/bench_step.py --model resnet18 --batch 32 --res 224 \\
        --strategies dense,fst --backend native --device cpu --steps 10

Strategies are timed interleaved (one step of each in turn, every round) so that a noisy
machine slows all of them alike; the ratios to ``dense`` are taken within this one run.
Mask overhead ("mask share") is the time of computing S(W), S(W^T) (or T(W)) for every layer
and the IR gradient shift on every layer's dY shape, timed separately, over the median step.
Prints a table, then one JSON line (the last line) with ``<strategy>_ms``,
``ratio_<strategy>`` and ``mask_share_<strategy>`` for each strategy.

On a GPU (``--device cuda``) an entry of ``--strategies`` may name its backend
(``STRATEGY@BACKEND``), images/s and peak memory are added (``<entry>_img_s``,
``<entry>_peak_gib``), ``--compile`` adds a ``torch.compile`` variant of every entry (dropped,
with the error, where compilation fails) and ``--summary`` prints each sparse24 model's
per-layer kernels and timings (where the time goes). The issue-11 runs:

    python scripts/bench_step.py --device cuda --model resnet50 --batch 256 --res 224 \
        --amp bf16 --channels-last --strategies dense,fst@native,fst@sparse24 --summary
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import fst
from fst.layers import SparseConv2d, sparse_layers
from fst.ops.native import ir_half
from fst.rules import weight_operands


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
    p.add_argument("--steps", type=int, default=10, help="timed steps per strategy")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per strategy")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument(
        "--profile", action="store_true", help="print the top ops of one step per strategy"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
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
    if "dense" not in args.strategies:
        args.strategies.insert(0, "dense")  # ratios need it
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model + optimizer per strategy, all from the same initial weights.

    ``strategy`` is a table entry: ``STRATEGY`` (on ``--backend``) or ``STRATEGY@BACKEND``,
    with ``+compile`` for a ``torch.compile`` variant.
    """

    def __init__(self, args, strategy, state, device):
        torch.manual_seed(0)
        model = getattr(torchvision.models, args.model)(num_classes=1000)
        model.load_state_dict(state)
        key, _, backend = strategy.removesuffix("+compile").partition("@")
        fst.sparsify(model, key, backend or args.backend)
        mf = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=mf).train()
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=7e-5)
        self.loss = nn.CrossEntropyLoss()
        self.device, self.amp = device, args.amp
        self.strategy = strategy
        self.backend = backend or args.backend
        self.forward = torch.compile(self.model) if strategy.endswith("+compile") else self.model
        self.peak_bytes = 0

    def step(self, x, y):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss = self.loss(self.forward(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))

    def mask_ms(self, reps=3) -> float:
        """Median ms of S(W)/S(W^T)/T(W) for every layer plus the IR shift on each dY shape."""
        layers = list(sparse_layers(self.model))
        dys = []
        for _, m in layers:
            if m.plan.weight_grad == "fixed" and isinstance(m, SparseConv2d):
                n, _, h, w = m.last_input_shape
                out = nn.functional.conv2d(
                    torch.empty(1, m.in_channels, h, w, device=self.device),
                    m.weight.detach(),
                    None,
                    m.stride,
                    m.padding,
                    m.dilation,
                ).shape
                dys.append(torch.randn(n, *out[1:], device=self.device))
        times = []
        for _ in range(reps):
            sync(self.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                for _, m in layers:
                    weight_operands(m.weight, m.plan)
                for d in dys:
                    ir_half(d, 1.0, dim=3)
            sync(self.device)
            times.append(time.perf_counter() - t0)
        return (
            1e3 * statistics.median(times)
            if layers and not all(m.plan.is_dense for _, m in layers)
            else 0.0
        )


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every entry alike: cuDNN's fastest algorithms
    torch.manual_seed(0)
    state = getattr(torchvision.models, args.model)(num_classes=1000).state_dict()
    if args.compile:
        args.strategies += [f"{s}+compile" for s in args.strategies]
    runners = [Runner(args, s, state, device) for s in args.strategies]
    x = torch.randn(args.batch, 3, args.res, args.res, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    failed = {}
    for r in list(runners):
        try:
            for _ in range(args.warmup):
                r.step(x, y)
        except Exception as e:  # e.g. a model torch.compile cannot trace: report, time the rest
            if not r.strategy.endswith("+compile"):
                raise
            failed[r.strategy] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"{r.strategy}: dropped, warm-up failed: {failed[r.strategy]}", flush=True)
            runners.remove(r)
            args.strategies.remove(r.strategy)
    times = {r.strategy: [] for r in runners}
    for i in range(args.steps):
        order = runners if i % 2 == 0 else runners[::-1]  # alternate order against drift
        for r in order:
            sync(device)
            t0 = time.perf_counter()
            r.step(x, y)
            sync(device)
            times[r.strategy].append(time.perf_counter() - t0)
        print(
            f"round {i + 1}/{args.steps}: "
            + ", ".join(f"{s} {1e3 * t[-1]:.0f} ms" for s, t in times.items()),
            flush=True,
        )

    med = {s: 1e3 * statistics.median(t) for s, t in times.items()}
    masks = {r.strategy: r.mask_ms() for r in runners}
    result = {
        "model": args.model,
        "device": args.device,
        "batch": args.batch,
        "res": args.res,
        "backend": args.backend,
        "steps": args.steps,
        "amp": args.amp,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result.update(_cuda_versions())
    if failed:
        result["failed"] = failed
    lines = [
        f"{args.model} batch {args.batch} res {args.res} on {args.device} "
        f"({args.backend} backend, {args.steps} interleaved steps, median)"
    ]
    cuda = device.type == "cuda"
    w = max([10] + [len(s) for s in args.strategies])
    head = f"{'strategy':<{w}} {'ms/step':>9} {'ratio':>7} {'mask ms':>8} {'mask share':>10}"
    lines.append(head + (f" {'img/s':>8} {'peak GiB':>8}" if cuda else ""))
    for s in args.strategies:
        ratio = med[s] / med["dense"]
        share = masks[s] / med["dense"]
        line = f"{s:<{w}} {med[s]:>9.1f} {ratio:>7.3f} {masks[s]:>8.1f} {100 * share:>9.2f}%"
        result[f"{s}_ms"] = round(med[s], 2)
        result[f"ratio_{s}"] = round(ratio, 4)
        result[f"mask_share_{s}"] = round(share, 4)
        if cuda:
            r = next(r for r in runners if r.strategy == s)
            img_s, peak = args.batch / (med[s] / 1e3), r.peak_bytes / 2**30
            line += f" {img_s:>8.1f} {peak:>8.2f}"
            result[f"{s}_img_s"] = round(img_s, 1)
            result[f"{s}_peak_gib"] = round(peak, 3)
        lines.append(line)
    print("\n" + "\n".join(lines))
    details = _sparse24_details(runners) if args.summary else ""
    if details:
        print(details)

    if args.profile:
        for r in runners:
            with torch.profiler.profile() as prof:
                r.step(x, y)
            print(f"\n== profile of one {r.strategy} step ==")
            sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            print(prof.key_averages().table(sort_by=sort, row_limit=15))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python scripts/bench_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
        md = ["```", *lines, "```", "", f"command: `{cmd}`"]
        if details:
            md += ["", details]
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
            out += [f"\n== {r.strategy}: fst.summary ==", str(fst.summary(r.model))]
    if out:
        out += ["\n== sparse24 kernel choices (ms per kernel, one-time timing) ==",
                fst.BACKENDS.get("sparse24").choices_table()]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
