"""Table 2: time to 2:4-sparsify W, dY and im2col X^T of ResNet-18's second conv.

    python scripts/table2_mask_timing.py [--cpu-batch 32] [--gpu-batch 256] [--repeats 5]

Times the paper's naive sort-based magnitude mask, ``fst.masks.nm_mask`` and (for X^T) the fixed
mask of Eq. 7, on the CPU and, when CUDA is available, on the GPU. The im2col X^T of batch 256
is 256*576*3136 floats (1.85 GB) and the sort needs several times that, so the CPU batch is
smaller by default and stated in the output. Writes ``table2_mask_timing.{csv,md}``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402

from fst.analysis import paper, report, timing  # noqa: E402
from fst.threads import configure_threads  # noqa: E402

NO_GPU = "not measured (no GPU lent)"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument("--cpu-batch", type=int, default=32, help="batch of dY and X^T on the CPU")
    p.add_argument(
        "--gpu-batch", type=int, default=256, help="batch on the GPU (lower it if it does not fit)"
    )
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    configure_threads()  # FST_NUM_THREADS / OMP_NUM_THREADS, else the usable cores

    rows = timing.table2(args.cpu_batch, "cpu", args.repeats)
    gpu = torch.cuda.is_available()
    if gpu:
        rows += timing.table2(args.gpu_batch, "cuda", max(args.repeats, 20), warmup=3)
    out = Path(args.out)
    report.write_csv(out / "table2_mask_timing.csv", rows)

    def cell(obj, impl, dev):
        hit = [
            r
            for r in rows
            if r["object"] == obj and r["implementation"] == impl and r["device"] == dev
        ]
        return f"{hit[0]['median_s']:.4g}" if hit else ("—" if dev == "cpu" or gpu else NO_GPU)

    impls = ["naive sort (paper)", "fst.masks.nm_mask", "fixed mask (Eq. 7)"]
    table = []
    for obj in ("W", "dY", "X^T"):
        shapes = {r["device"]: r["shape"] for r in rows if r["object"] == obj}
        row = {"object": obj, "paper": paper.TABLE2_TIME_S[obj], "cpu_shape": shapes["cpu"]}
        for impl in impls:
            row[f"cpu {impl}"] = cell(obj, impl, "cpu")
            row[f"gpu {impl}"] = cell(obj, impl, "cuda")
        table.append(row)
    cols = (
        ["object", "paper", "cpu_shape"] + [f"cpu {i}" for i in impls] + [f"gpu {i}" for i in impls]
    )
    heads = ["object", "paper, sort (A100, batch 256)", f"CPU shape (batch {args.cpu_batch})"]
    heads += [f"CPU {i}" for i in impls] + [
        f"GPU {i}" + (f" (batch {args.gpu_batch})" if gpu else "") for i in impls
    ]
    body = (
        "Median seconds of one sparsification (mask and multiply) over "
        f"{args.repeats} repeats after a warm-up. Shapes of ResNet-18's second conv (`layer1.0.conv1`): "
        "W is [64, 576] with groups along Cin*k*k; dY is [N, 64, 3136] and im2col X^T [N, 576, 3136], "
        "both with groups along H*W (the reduction dimension of Eq. 3). Random normal inputs; "
        "the cost of these masks hardly depends on the values.\n\n"
        f"CPU batch: {args.cpu_batch} (the paper's 256 would need a 1.85 GB X^T plus the sort's "
        "copies on a shared 2-core machine). "
        + (f"GPU batch: {args.gpu_batch}." if gpu else "GPU: " + NO_GPU + ".")
        + f" The paper's dense training step at batch 256 on an A100 took {paper.TABLE2_TRAIN_STEP_S} s; "
        "our CPU training step is in `table6_overhead.md`.\n\n"
        + report.markdown_table(table, cols, heads)
    )
    report.write_markdown(
        out / "table2_mask_timing.md", "Table 2: time of 2:4 sparsification (seconds)", body
    )
    for r in rows:
        print(
            f"{r['device']:5s} {r['object']:4s} {r['implementation']:22s} {r['shape']:>16s} {r['median_s']:.4g} s"
        )


if __name__ == "__main__":
    main()
