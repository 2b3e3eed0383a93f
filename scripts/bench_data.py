"""Images/s of each ImageNet loader (``data.loader``) per worker count, beside the training
step's own images/s, on an ImageFolder of real-size JPEGs made from scikit-image's photographs.

    python scripts/bench_data.py                                   # pil vs torchvision, CPU
    python scripts/bench_data.py --workers 0,1,2,4 --batch 64 --batches 16 --repeats 3
    python scripts/bench_data.py --device cuda --workers 0,4,8,16 --model resnet50 \\
        --step-batch 256 --amp bf16 --out results/gpu/bench_data.json   # adds torchvision@cuda

Each loader is the real training one: ``DATASETS["imagenet"](loader=...)`` with the engine's
``ResumableSampler`` and a ``DataLoader`` of ``--workers`` processes, timed from the first batch
after a warm-up until ``--batches`` batches are *on the device as normalized float32 [B, 3, S,
S]* (so ``torchvision@cuda``, which decodes with nvJPEG when the batch moves to the GPU, is
timed through its decode). Loaders are timed in interleaved rounds (``--repeats``; the median is
reported) so a busy machine slows all alike; the main process runs one torch thread while
loaders are timed, so ``workers=0`` compares single cores. ``x pil`` is the ratio of the medians
to ``pil``'s at the same worker count, ``paired`` the median of the per-round ratios (each
loader against ``pil`` timed right beside it: steadier on a shared machine). ``CPU ms/img`` is
the CPU time the main process and the workers spent per image over the timed batches (from
``/proc``), and ``x pil CPU`` pil's over this loader's: the least load-sensitive comparison.

The training step is an ``fst``-sparsified torchvision model (``--model``, ``--strategy``,
``--backend``) doing forward, backward and SGD step on random inputs of the same size, at
``--step-batch``: the rate a loader has to keep up with.

The data set (``--images`` train JPEGs, long side ``--long-side`` px, see
``fst.data.photos``) is written once into ``$FST_CACHE`` (default ``outputs/cache``) or
``--data-dir`` and reused. Prints a table and, last, one JSON line; the JSON is also written to
``outputs/bench_data/`` unless ``--out`` names a file (e.g. under ``results/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY = {  # --tiny: seconds on one core (the test suite runs it)
    "images": 16,
    "val_images": 8,
    "long_side": 96,
    "image_size": 32,
    "resize_size": 36,
    "batch": 4,
    "batches": 2,
    "warmup": 1,
    "repeats": 1,
    "workers": "0",
    "step_res": 32,
    "step_batch": 2,
    "step_steps": 1,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--loaders",
        default=None,
        help="comma-separated: pil, torchvision (decode in workers), torchvision@cuda (nvJPEG "
        "on the GPU); default pil,torchvision (+ torchvision@cuda with --device cuda)",
    )
    p.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--device", default="cpu", help="where batches go (cpu, cuda)")
    p.add_argument("--split", choices=["train", "val"], default="train")
    p.add_argument("--batch", type=int, default=64, help="loader batch size")
    p.add_argument("--batches", type=int, default=16, help="timed batches per repeat")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches (default: workers+1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; median reported")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize-size", type=int, default=256)
    p.add_argument("--images", type=int, default=3000, help="train JPEGs in the generated set")
    p.add_argument("--val-images", type=int, default=300)
    p.add_argument("--long-side", type=int, default=500, help="long side of the JPEGs (px)")
    p.add_argument("--data-dir", default=None, help="where the JPEG set is (written if absent)")
    p.add_argument("--model", default="resnet18", help="torchvision model for the step")
    p.add_argument("--strategy", default="fst")
    p.add_argument("--backend", default="native")
    p.add_argument("--step-batch", type=int, default=16)
    p.add_argument("--step-res", type=int, default=None, help="default: --image-size")
    p.add_argument("--step-steps", type=int, default=3, help="timed training steps")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-step", action="store_true", help="time the loaders only")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (tests)")
    p.add_argument("--out", default=None, help="JSON file to write (default: outputs/...)")
    args = p.parse_args(argv)
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.loaders is None:
        args.loaders = "pil,torchvision" + (",torchvision@cuda" if "cuda" in args.device else "")
    args.loaders = [s.strip() for s in args.loaders.split(",") if s.strip()]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu")
    if any(s.endswith("@cuda") for s in args.loaders) and not args.device.startswith("cuda"):
        p.error("torchvision@cuda decodes on the GPU: it needs --device cuda")
    args.step_res = args.step_res or args.image_size
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_split(args, spec: str, root: Path):
    """The ``imagenet`` data set of ``--split`` for loader ``spec`` (``name[@decode_device]``)."""
    from fst.data import DATASETS

    loader, _, decode = spec.partition("@")
    data = DATASETS.get("imagenet")(
        root=str(root),
        image_size=args.image_size,
        resize_size=args.resize_size,
        loader=loader,
        decode_device=decode or "cpu",
    )
    return getattr(data, args.split), data.collate_fn


def cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) the processes ``pids`` have used so far, from ``/proc``
    (``None`` where there is no ``/proc``)."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # fields from 3 (state) on
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_loader(
    args, dataset, collate_fn, workers: int, epoch: int, device
) -> tuple[float, float | None]:
    """Images/s of one pass (``--batches`` batches on ``device`` after the warm-up) and the CPU
    milliseconds per image it cost: main process (all its threads) plus the workers, over the
    same window. CPU time hardly changes with other load on the machine, wall time does."""
    from torch.utils.data import DataLoader

    from fst.engine.sampler import ResumableSampler

    warmup = args.warmup if args.warmup is not None else workers + 1
    sampler = ResumableSampler(len(dataset), args.batch, seed=0)
    sampler.set_epoch(epoch)
    need = (warmup + args.batches) * args.batch
    if need > sampler.per_rank:
        raise SystemExit(
            f"{need} images needed ((warmup {warmup} + {args.batches} batches) x batch "
            f"{args.batch}) but the {args.split} split has {len(dataset)}: raise --images or "
            "lower --batches/--batch"
        )
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    it = iter(loader)
    for _ in range(warmup):
        images, _ = next(it)
        images.to(device, non_blocking=True)
    sync(device)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    t0, c0, w0 = time.perf_counter(), time.process_time(), cpu_seconds(pids)
    for _ in range(args.batches):
        images, labels = next(it)
        x = images.to(device, non_blocking=True)
        labels.to(device, non_blocking=True)
    sync(device)
    dt_s = time.perf_counter() - t0
    w1 = cpu_seconds(pids)
    cpu_s = time.process_time() - c0 + (w1 - w0 if w0 is not None and w1 is not None else 0.0)
    if pids and (w0 is None or w1 is None):
        cpu_s = None
    expected = (args.batch, 3, args.image_size, args.image_size)
    if tuple(x.shape) != expected or x.dtype != torch.float32 or x.device.type != device.type:
        raise RuntimeError(f"loader gave {tuple(x.shape)} {x.dtype} on {x.device}, not {expected}")
    del it
    n = args.batches * args.batch
    return n / dt_s, (None if cpu_s is None else 1e3 * cpu_s / n)


def time_step(args, device) -> float:
    """Images/s of an ``fst`` training step (forward, backward, SGD) at ``--step-batch``."""
    import torchvision

    import fst

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=1000)
    fst.sparsify(model, args.strategy, args.backend)
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=mf).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.step_batch, 3, args.step_res, args.step_res, device=device)
    x = x.contiguous(memory_format=mf)
    y = torch.randint(0, 1000, (args.step_batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(args.step_steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return args.step_batch / statistics.median(times)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--exclude", "*"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    import PIL
    import torchvision
    from tqdm.auto import tqdm

    from fst.data.photos import default_cache_dir, make_photo_folder

    args = parse_args(argv)
    device = torch.device(args.device)
    cache = default_cache_dir()
    cache = cache if cache.is_absolute() else ROOT / cache
    name = f"photos_{args.images}_{args.val_images}_{args.long_side}"
    root = Path(args.data_dir) if args.data_dir else cache / name
    make_photo_folder(root, args.images, args.val_images, args.long_side, progress=True)
    load_start = os.getloadavg()

    splits = {spec: build_split(args, spec, root) for spec in args.loaders}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates: dict[str, dict[int, list[float]]] = {s: {w: [] for w in args.workers} for s in splits}
    cpu_ms: dict[str, dict[int, list[float]]] = {s: {w: [] for w in args.workers} for s in splits}
    # Alternate the loaders' order every round so neither always runs first after a switch.
    specs = list(splits)
    runs = [
        (r, w, s)
        for r in range(args.repeats)
        for w in args.workers
        for s in (specs if r % 2 == 0 else specs[::-1])
    ]
    for r, w, spec in tqdm(runs, desc="loaders", unit="pass", disable=args.tiny):
        rate, ms = time_loader(args, *splits[spec], w, r, device)
        rates[spec][w].append(rate)
        if ms is not None:
            cpu_ms[spec][w].append(ms)
    torch.set_num_threads(threads)
    med = {s: {w: statistics.median(v) for w, v in per.items()} for s, per in rates.items()}
    cpu = {s: {w: statistics.median(v) for w, v in per.items() if v} for s, per in cpu_ms.items()}

    step = None if args.no_step else time_step(args, device)
    load_end = os.getloadavg()

    print(
        f"\n{args.split} loaders, batch {args.batch}, {args.image_size} px, {args.batches} "
        f"batches x {args.repeats} rounds (median), to {args.device}; {os.cpu_count()} CPUs, "
        f"load {load_start[0]:.2f} -> {load_end[0]:.2f}"
    )

    def paired(spec: str) -> dict[int, float]:
        """Median over rounds of this loader's rate / pil's in the same round (robust to load
        that changes between rounds)."""
        return {
            w: statistics.median(a / b for a, b in zip(rates[spec][w], rates["pil"][w]))
            for w in args.workers
        }

    def col(x: float | None, fmt: str) -> str:
        return f"{x:{fmt}}" if x is not None else f"{'-':>{fmt.split('.')[0]}}"

    print(
        f"{'loader':<18} {'workers':>7} {'img/s':>9} {'x pil':>7} {'paired':>7} "
        f"{'CPU ms/img':>10} {'x pil CPU':>9}"
    )
    for spec, per in med.items():
        pairs = paired(spec) if "pil" in med else {}
        for w, v in per.items():
            base = med.get("pil", {}).get(w)
            ms, base_ms = cpu[spec].get(w), cpu.get("pil", {}).get(w)
            print(
                f"{spec:<18} {w:>7} {v:>9.1f} {col(v / base if base else None, '7.2f')} "
                f"{col(pairs.get(w), '7.2f')} {col(ms, '10.2f')} "
                f"{col(base_ms / ms if ms and base_ms else None, '9.2f')}"
            )
    if step is not None:
        print(
            f"training step: {args.model} {args.strategy} ({args.backend}), batch "
            f"{args.step_batch}, {args.step_res} px, amp {args.amp} on {args.device}: "
            f"{step:.1f} img/s"
        )

    result = {
        "split": args.split,
        "batch": args.batch,
        "image_size": args.image_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "device": args.device,
        "images": args.images,
        "long_side": args.long_side,
        "img_s": {s: {str(w): round(v, 2) for w, v in per.items()} for s, per in med.items()},
        "cpu_ms_per_img": {
            s: {str(w): round(v, 3) for w, v in per.items()} for s, per in cpu.items()
        },
        "img_s_runs": {
            s: {str(w): [round(x, 2) for x in v] for w, v in per.items()}
            for s, per in rates.items()
        },
    }
    if "pil" in med:
        for spec in med:
            if spec != "pil":
                result[f"ratio_{spec}_pil"] = {
                    str(w): round(v / med["pil"][w], 3) for w, v in med[spec].items()
                }
                result[f"cpu_ratio_{spec}_pil"] = {
                    str(w): round(cpu["pil"][w] / ms, 3)
                    for w, ms in cpu[spec].items()
                    if w in cpu["pil"]
                }
                result[f"paired_ratio_{spec}_pil"] = {
                    str(w): round(v, 3) for w, v in paired(spec).items()
                }
    if step is not None:
        result.update(
            step_img_s=round(step, 2),
            step_model=args.model,
            step_strategy=args.strategy,
            step_backend=args.backend,
            step_batch=args.step_batch,
            step_res=args.step_res,
            amp=args.amp,
        )
    result.update(
        cpus=os.cpu_count(),
        loadavg_start=[round(x, 2) for x in load_start],
        loadavg_end=[round(x, 2) for x in load_end],
        cpu=platform.processor() or platform.machine(),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        pillow=PIL.__version__,
        commit=git_commit(),
        date=dt.datetime.now().isoformat(timespec="seconds"),
    )
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    out = Path(args.out) if args.out else ROOT / "outputs" / "bench_data" / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
