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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torchvision
from torch import nn

import fst
from fst.compile import MODES, compile_model
from fst.layers import SparseConv2d, sparse_layers
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
    p.add_argument("--strategies", default="dense,fst", help="comma-separated strategy keys")
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
        "--profile", action="store_true", help="print the top ops of one step per configuration"
    )
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in args.strategies:
        fst.STRATEGIES.get(s)  # fail early with the list of valid keys
    fst.BACKENDS.get(args.backend)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu")
    if "dense" not in args.strategies:
        args.strategies.insert(0, "dense")  # ratios need it
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MaskWork:
    """The mask work of one model's sparse layers (see the module docstring), timed alone."""

    def __init__(self, model: nn.Module, device, compile_mode: str | None):
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
                self.dys.append(torch.randn(n, *out[1:], device=device))
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
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.fn(weights, self.dys)
        sync(self.device)
        return 1e3 * (time.perf_counter() - t0)


class Runner:
    """One model + optimizer per configuration, all from the same initial weights."""

    def __init__(self, args, strategy, state, device, compile_mode=None):
        torch.manual_seed(0)
        model = getattr(torchvision.models, args.model)(num_classes=1000)
        model.load_state_dict(state)
        fst.sparsify(model, strategy, args.backend)
        mf = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=mf).train()
        compile_model(self.model, compile_mode or False)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=7e-5)
        self.loss = nn.CrossEntropyLoss()
        self.device, self.amp = device, args.amp
        self.strategy, self.compile_mode = strategy, compile_mode
        self.name = strategy + ("+compile" if compile_mode else "")
        self.masks: MaskWork | None = None

    def step(self, x, y):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss = self.loss(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def mask_ms(self) -> float:
        if self.masks is None:  # after a step: the layers know their input shapes
            self.masks = MaskWork(self.model, self.device, self.compile_mode)
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
    load_start = loadavg()
    torch.manual_seed(0)
    state = getattr(torchvision.models, args.model)(num_classes=1000).state_dict()
    modes = [None] + ([args.compile_mode] if args.compile else [])
    runners = [Runner(args, s, state, device, mode) for mode in modes for s in args.strategies]
    x = torch.randn(args.batch, 3, args.res, args.res, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    compile_s = {}
    for r in runners:
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            r.step(x, y)
        sync(device)
        r.mask_ms()
        if r.compile_mode:
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
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    print(
        f"\n{args.model} batch {args.batch} res {args.res} on {args.device} ({args.backend} "
        f"backend, {torch.get_num_threads()} threads, {args.steps} interleaved rounds, medians; "
        f"load average {load_start} -> {result['loadavg_end']})"
    )
    header = f"{'config':<16} {'ms/step':>9} {'ratio':>7} {'ratio IQR':>13} {'mask ms':>8}"
    print(header + f" {'mask share':>10}")
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
        print(f"{r.name:<16} {ms:>9.1f} {ratio:>7.3f} {iqr:>13} {mask:>8.1f} {100 * share:>9.2f}%")
        key = r.strategy + ("_compiled" if r.compile_mode else "")
        result[f"{key}_ms"] = round(ms, 2)
        result[f"ratio_{key}"] = round(ratio, 4)
        result[f"ratio_{key}_iqr"] = [round(q[0], 4), round(q[2], 4)]
        result[f"mask_ms_{key}"] = round(mask, 2)
        result[f"mask_share_{key}"] = round(share, 4)
        if r.name in compile_s:
            result[f"compile_s_{r.strategy}"] = round(compile_s[r.name], 1)

    if args.profile:
        for r in runners:
            with torch.profiler.profile() as prof:
                r.step(x, y)
            print(f"\n== profile of one {r.name} step ==")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
