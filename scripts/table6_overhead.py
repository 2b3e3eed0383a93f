"""Table 6: per-iteration overhead of S(W), S(W^T) and the IR shift vs one training step.

    python scripts/table6_overhead.py [--cpu-batch 16] [--gpu-batch 256] [--repeats 3]

ResNet-18 (torchvision, 224 px, 1000 classes) converted with ``fst.sparsify("fst")``
(native backend); the step is forward + backward + SGD step, for the FST model and a dense
copy. Overheads use the library's own functions on every sparse layer (see
``fst.analysis.timing.table6``). CPU always; GPU too when CUDA is available. Writes
``table6_overhead.{csv,md}``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402

from fst.analysis import paper, report, timing  # noqa: E402
from fst.threads import configure_threads  # noqa: E402

KEYS = ["train_step_fst", "train_step_dense", "S(W)", "S(W^T)", "shift(dY)", "total"]
NO_GPU = "not measured (no GPU lent)"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument("--cpu-batch", type=int, default=16)
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3, help="timed training steps (the paper: 1000)")
    args = p.parse_args(argv)
    configure_threads()  # FST_NUM_THREADS / OMP_NUM_THREADS, else the usable cores

    results = {"cpu": timing.table6(args.cpu_batch, "cpu", args.repeats, res=args.res)}
    if torch.cuda.is_available():
        results["cuda"] = timing.table6(
            args.gpu_batch, "cuda", max(args.repeats, 50), warmup=5, res=args.res
        )
    rows = [
        {"device": dev, "batch": r["batch"], "res": r["res"], "item": k, **r[k]}
        for dev, r in results.items()
        for k in KEYS
    ]
    out = Path(args.out)
    report.write_csv(out / "table6_overhead.csv", rows)

    def fmt(dev, k):
        if dev not in results:
            return NO_GPU
        return f"{results[dev][k]['median_s']:.4g}"

    table = [
        {
            "setting": "paper (A100, batch 256, PyTorch 1.7), s",
            **{k: paper.TABLE6_S.get(k.replace("train_step_fst", "train_step"), "—") for k in KEYS},
        }
    ]
    table[0]["train_step_dense"] = "—"
    for dev, label in (
        ("cpu", f"ours CPU (batch {args.cpu_batch}), s"),
        ("cuda", "ours GPU" + (f" (batch {args.gpu_batch})" if "cuda" in results else "") + ", s"),
    ):
        table.append({"setting": label, **{k: fmt(dev, k) for k in KEYS}})
    for dev in results:
        r = results[dev]
        share = {
            k: f"{100 * r[k]['median_s'] / r['train_step_fst']['median_s']:.2f}%"
            for k in ("S(W)", "S(W^T)", "shift(dY)", "total")
        }
        table.append(
            {
                "setting": f"ours {dev.upper()}: share of the FST step",
                "train_step_fst": "100%",
                "train_step_dense": f"{100 * r['train_step_dense']['median_s'] / r['train_step_fst']['median_s']:.1f}%",
                **share,
            }
        )
    paper_share = 100 * paper.TABLE6_S["total"] / paper.TABLE6_S["train_step"]
    cpu = results["cpu"]
    body = (
        f"Median seconds over {args.repeats} training steps (after a warm-up) and over at least 10 "
        f"calls of each overhead. ResNet-18 at {args.res}px; {cpu['layers']} sparse layers, "
        f"{cpu['shifted_layers']} of them with the IR shift. CPU batch {args.cpu_batch} (batch 256 "
        "at 224 px would take minutes per step on this shared 2-core machine). "
        + ("" if "cuda" in results else f"GPU: {NO_GPU}. ")
        + f"The paper's overhead is {paper_share:.1f}% of its step.\n\n"
        "S(W) and S(W^T) are computed once per forward for every layer; shift(dY) is the fused "
        "shift-and-add of Eq. 10 on each conv's dY. On a CPU the convolutions are slow, so the "
        "shares say little about an A100; the absolute times show the masks' cost.\n\n"
        + report.markdown_table(
            table,
            ["setting", *KEYS],
            [
                "",
                "FST training step",
                "dense training step",
                "S(W)",
                "S(W^T)",
                "shift(dY)",
                "total overhead",
            ],
        )
    )
    report.write_markdown(
        out / "table6_overhead.md", "Table 6: extra time per iteration (seconds)", body
    )
    for r in rows:
        print(f"{r['device']:5s} {r['item']:18s} {r['median_s']:.4g} s")


if __name__ == "__main__":
    main()
