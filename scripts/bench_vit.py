"""Time 2:4 sparse training of vision transformers: a ViT-B MLP block and a DeiT-S step.

    # the ViT-B/16 MLP block (768 -> 3072 -> GELU -> 768 on [B, 197, 768]), forward + backward
    python scripts/bench_vit.py --what mlp --backend sparse24 --strategy mvue --device cuda
    # one ViT-B transformer block (attention stays dense), forward + backward
    python scripts/bench_vit.py --what block --backend sparse24 --strategy mvue --device cuda
    # a whole DeiT-S training step (AdamW, bf16 autocast), batch 128 at 224 px
    python scripts/bench_vit.py --what step --model deit_small_patch16_224 --batch 128 \\
        --backend sparse24 --strategy fst --device cuda

Each case runs the same module twice: ``dense`` (plain ``nn.Linear``, no fst code) and the
given ``--strategy`` on ``--backend`` (``fst.sparsify``; the blocks' Linear layers get the
ViT's token layout, so Eq. 3 pairs patches inside grid rows and keeps the class token dense).
Both in ``--dtype`` (bf16 by default: autocast on CUDA, bf16 weights and inputs for the MLP and
block cases). They are timed interleaved (one iteration of each in turn, every round) so that
a noisy machine slows both alike, with CUDA synchronisation around each iteration; the ratio
``dense / sparse`` (> 1: the sparse one is faster) is taken within this one run. Without a GPU
it runs on the CPU, where only the timing machinery is exercised (no sparse tensor cores).

Prints a table, then one JSON line (the last line) with ``dense_ms``, ``sparse_ms``,
``speedup`` and the settings. ``--out DIR`` also writes ``DIR/bench_vit_<what>.md`` with the
command, machine, commit and date (e.g. ``--out results/gpu``; by default nothing is written).
"""

from __future__ import annotations

import argparse
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
from fst.tokens import TokenLayout  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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
        "--backend", default="native", help="key of fst.BACKENDS (sparse24: the GPU backend)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--steps", type=int, default=20, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations per variant")
    p.add_argument("--out", default=None, help="directory for bench_vit_<what>.md (optional)")
    args = p.parse_args(argv)
    if args.backend not in fst.BACKENDS:
        p.error(
            f"--backend {args.backend!r} is not available in this checkout; registered backends: "
            f"{', '.join(fst.BACKENDS.keys())}. The 2:4 GPU backend 'sparse24' "
            "(fst/ops/sparse24.py) comes with the GPU work; use a checkout that has it, or "
            "--backend native to time the masked dense kernels"
        )
    backend = fst.BACKENDS.get(args.backend)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available; use --device cpu")
    if getattr(backend, "needs_cuda", False) and not args.device.startswith("cuda"):
        p.error(f"--backend {args.backend} runs on CUDA only; use --device cuda")
    if args.strategy not in fst.STRATEGIES:
        p.error(f"--strategy {args.strategy!r}; valid: {', '.join(fst.STRATEGIES.keys())}")
    args.model = args.model or (
        "deit_small_patch16_224" if args.what == "step" else "vit_base_patch16_224"
    )
    args.batch = args.batch or (128 if args.what == "step" else 64)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_vit(args):
    import timm

    extra = {} if args.depth is None else {"depth": args.depth}
    return timm.create_model(
        args.model, pretrained=False, img_size=args.res, num_classes=1000, **extra
    )


class Case:
    """One variant (dense or sparse) of the timed workload, ready to ``run()`` an iteration."""

    def __init__(self, args, sparse: bool, device: torch.device):
        torch.manual_seed(0)
        dtype = DTYPES[args.dtype]
        self.device, self.what = device, args.what
        vit = build_vit(args)
        self.tokens = TokenLayout(vit.num_prefix_tokens, tuple(vit.patch_embed.grid_size))
        if args.what == "step":
            self.module = vit
            if sparse:  # also gives the blocks' Linear layers the ViT's token layout
                fst.sparsify(vit, args.strategy, args.backend)
            self.module.to(device).train()
            self.opt = torch.optim.AdamW(vit.parameters(), lr=1e-4)
            self.x = torch.randn(args.batch, 3, args.res, args.res, device=device)
            self.y = torch.randint(0, 1000, (args.batch,), device=device)
            self.amp = dtype if dtype != torch.float32 and device.type == "cuda" else None
        else:
            block = vit.blocks[0]
            self.module = block.mlp if args.what == "mlp" else block
            if sparse:
                fst.sparsify(self.module, args.strategy, args.backend)
                for m in self.module.modules():
                    if isinstance(m, nn.Linear):
                        m.token_layout = self.tokens
            self.module.to(device=device, dtype=dtype).train()
            self.x = torch.randn(
                args.batch, self.tokens.num_tokens, vit.embed_dim, device=device, dtype=dtype
            ).requires_grad_(True)
            self.dy = torch.randn_like(self.x)
        del vit

    def run(self) -> None:
        if self.what == "step":
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                loss = F.cross_entropy(self.module(self.x), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            return
        self.x.grad = None
        for p in self.module.parameters():
            p.grad = None
        self.module(self.x).backward(self.dy)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    cases = {"dense": Case(args, False, device), args.strategy: Case(args, True, device)}
    for c in cases.values():
        for _ in range(args.warmup):
            c.run()
    times = {k: [] for k in cases}
    for i in range(args.steps):
        order = list(cases.items())
        for name, c in order if i % 2 == 0 else order[::-1]:  # alternate against drift
            sync(device)
            t0 = time.perf_counter()
            c.run()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    dense_ms, sparse_ms = med["dense"], med[args.strategy]
    what = {
        "mlp": f"{args.model} MLP block (fc1 -> GELU -> fc2), forward + backward",
        "block": f"{args.model} transformer block (attention dense), forward + backward",
        "step": f"{args.model} training step (AdamW, {args.dtype} autocast on CUDA)",
    }[args.what]
    tokens = cases["dense"].tokens
    print(
        f"\n{what}\nbatch {args.batch} x {tokens.num_tokens} tokens ({tokens.describe()}), "
        f"{args.dtype}, {args.device}, {args.steps} interleaved iterations, median"
    )
    rows = [
        {"variant": "dense", "backend": "torch", "ms": dense_ms, "speedup": 1.0},
        {
            "variant": args.strategy,
            "backend": args.backend,
            "ms": sparse_ms,
            "speedup": dense_ms / sparse_ms,
        },
    ]
    table = report.markdown_table(
        rows,
        ["variant", "backend", "ms", "speedup"],
        ["variant", "backend", "ms/iter", "dense/this"],
    )
    print(table)
    result = {
        "what": args.what,
        "model": args.model,
        "batch": args.batch,
        "tokens": tokens.num_tokens,
        "strategy": args.strategy,
        "backend": args.backend,
        "dtype": args.dtype,
        "device": args.device,
        "steps": args.steps,
        "dense_ms": round(dense_ms, 3),
        "sparse_ms": round(sparse_ms, 3),
        "speedup": round(dense_ms / sparse_ms, 4),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    if args.out:
        path = Path(args.out) / f"bench_vit_{args.what}.md"
        body = f"{what}; batch {args.batch} x {tokens.num_tokens} tokens, {args.dtype}.\n\n"
        report.write_markdown(path, f"ViT 2:4 benchmark: {args.what}", body + table)
        print(f"wrote {path}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
