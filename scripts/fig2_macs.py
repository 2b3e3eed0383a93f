"""Figure 2: MACs per conv layer of ResNet-18 (Eq. 1-3), dense and effective per strategy.

    python scripts/fig2_macs.py [--out results] [--image-size 224] [--exclude conv1 ...]

Writes ``fig2_macs_layers.csv`` (dense MACs per layer), ``fig2_macs_strategies.csv`` and
``fig2_macs.md`` (effective MACs per strategy, a 2:4 GEMM counted half) and ``fig2_macs.png``.
Pure counting: no data, no training, same numbers on any machine.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from torchvision.models import resnet18  # noqa: E402

from fst.analysis import macs, report  # noqa: E402
from fst.strategies import STRATEGIES  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help="registry keys")
    p.add_argument("--exclude", nargs="*", default=[], help="fnmatch patterns of layers kept dense")
    args = p.parse_args(argv)

    out = Path(args.out)
    layers = macs.conv_gemms(resnet18(), (1, 3, args.image_size, args.image_size))
    per_layer = macs.dense_macs(layers)
    per_strategy = macs.macs_by_strategy(layers, args.strategies, tuple(args.exclude))
    prov = report.provenance()

    report.write_csv(out / "fig2_macs_layers.csv", per_layer)
    report.write_csv(out / "fig2_macs_strategies.csv", per_strategy)
    layer_cols = ["name", "cin", "cout", "kernel", "hout", "wout", "eq1", "eq2", "eq3"]
    strat_cols = [
        "strategy",
        "pruned_eqs",
        "sparse_eqs",
        "eq1",
        "eq2",
        "eq3",
        "total",
        "backward_share",
        "speedup_bound",
    ]
    gm = [
        {**r, **{k: f"{r[k] / 1e9:.3f}" for k in ("eq1", "eq2", "eq3", "total")}}
        for r in per_strategy
    ]
    gm = [
        {
            **r,
            "backward_share": f"{100 * r['backward_share']:.1f}%",
            "speedup_bound": f"{r['speedup_bound']:.2f}x",
        }
        for r in gm
    ]
    mm = [{**r, **{k: f"{r[k] / 1e6:.1f}" for k in ("eq1", "eq2", "eq3")}} for r in per_layer]
    body = (
        f"ResNet-18 (torchvision), one {args.image_size}x{args.image_size} image, all {len(layers)} "
        "nn.Conv2d layers (fc excluded). Eq. 1 forward, Eq. 2 input gradient (none for the first "
        "conv: the image needs no gradient), Eq. 3 weight gradient. A GEMM with a 2:4 operand "
        "counts half; a pruned operand that is not 2:4 along the GEMM's reduction dimension (SR-STE's "
        "S(W)^T in Eq. 2, the release's regrouped weight) counts dense. Which equations each "
        "strategy prunes is read from its GEMM rules (`fst.rules`)"
        + (f"; layers kept dense: {args.exclude}" if args.exclude else "; every conv sparsified")
        + ".\n\nPaper (Sec. 1, Figure 2): the backward pass is up to 80% of SR-STE's computation.\n\n"
        "## Effective GMACs per image, all conv layers\n\n"
        + report.markdown_table(
            gm,
            strat_cols,
            [
                "strategy",
                "pruned in Eq.",
                "2:4 in Eq.",
                "Eq. 1",
                "Eq. 2",
                "Eq. 3",
                "total",
                "backward share",
                "dense/effective",
            ],
        )
        + "\n\n## Dense MACs per layer (millions)\n\n"
        + report.markdown_table(
            mm,
            layer_cols,
            ["layer", "Cin", "Cout", "k*k", "Hout", "Wout", "Eq. 1", "Eq. 2", "Eq. 3"],
        )
    )
    report.write_markdown(
        out / "fig2_macs.md",
        "Figure 2: MACs of ResNet-18's conv layers (counted, not timed)",
        body,
        prov,
    )
    macs.plot_macs(per_layer, per_strategy, out / "fig2_macs.png", f" ({args.image_size}px)")
    for r in gm:
        print(r["strategy"], r["total"], "GMACs, backward", r["backward_share"])


if __name__ == "__main__":
    main()
