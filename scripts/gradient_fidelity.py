"""Gradient fidelity of every strategy: local and propagated error per layer, effect on a step.

    python scripts/gradient_fidelity.py [--cases ...] [--seeds 1] [--vit-seeds 2] [--out results]

Measures, on one batch at given weights, how far each strategy's backward pass is from the
exact backward pass of the same forward network (:mod:`fst.analysis.fidelity` defines the
measures): per layer in depth order, the *local* error (the strategy's dX and dW from the
layer's exact dY) and the *propagated* error (the whole backward pass with the strategy), and
per strategy the cosine of the whole gradient and the one-step loss decrease against the exact
gradient's. Issue 24: the paper's conjecture that gg/gx fail because the dY error accumulates
over layers (Sec. 4), and whether IR recovers what the fixed X^T mask drops (Sec. 5.3).

Cases (``--cases``; all CPU-sized, nothing downloads):

- ``resnet18_init``: torchvision ResNet-18 (11 classes), random init, batch of random 224 px
  crops of the 11 photographs shipped with scikit-image / scikit-learn, label = the photograph.
- ``resnet18_photos``: the same network after ``--train-steps`` dense SGD steps on such crops
  (other crops than the measured batch).
- ``deit_tiny_init``: timm DeiT-Ti (224 px, 14x14 patch grid + class token), random init, the
  same photographs.
- ``vit_digits_init`` / ``vit_digits_trained``: the small ViT of ``+experiment=vit_digits_fst``
  (32 px digits, patch 4: an 8x8 grid, width 64, depth 4) at random init and after
  ``--vit-train-steps`` dense AdamW steps on the digits training split.

Each 224 px case is repeated for ``--seeds`` seeds, each vit_digits case for ``--vit-seeds``
(weights, batch and training order all change). The default cases are ``resnet18_photos``,
``vit_digits_init`` and ``vit_digits_trained`` (sized for 15 min on 2 busy CPU cores);
``--cases`` adds the others (results/gradient_fidelity.md has all five).
Writes ``gradient_fidelity.{csv,md,png}`` and ``gradient_fidelity_steps.csv`` under ``--out``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fst.analysis import fidelity, images, report  # noqa: E402

CASES = (
    "resnet18_init",
    "resnet18_photos",
    "deit_tiny_init",
    "vit_digits_init",
    "vit_digits_trained",
)

# The default run is sized for 15 min on 2 busy CPU cores (one 224 px ResNet case and the
# small ViT); --cases adds the others (results/gradient_fidelity.md has all five).
DEFAULT_CASES = ("resnet18_photos", "vit_digits_init", "vit_digits_trained")


def _resnet18(seed: int, classes: int):
    from fst.models.classification import resnet18

    torch.manual_seed(seed)
    return resnet18(num_classes=classes)


def _deit_tiny(seed: int, classes: int):
    from fst.models.classification import vit

    torch.manual_seed(seed)
    return vit("deit_tiny_patch16_224", num_classes=classes, img_size=224)


def _vit_digits(seed: int):
    from fst.models.classification import vit

    torch.manual_seed(seed)
    return vit(
        "vit_tiny_patch16_224",
        num_classes=10,
        img_size=32,
        patch_size=4,
        embed_dim=64,
        depth=4,
        num_heads=2,
        mlp_ratio=2.0,
    )


def _train_photos(model, steps: int, batch: int, seed: int, lr: float) -> None:
    """Dense SGD (momentum 0.9, weight decay 5e-4) on fresh photograph crops every step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for step in range(steps):
        x, y = images.photo_crops(batch, seed=10_000 + 100 * seed + step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def _digits(seed: int, n: int, train: bool):
    from fst.data.classification import digits

    bundle = digits(image_size=32, augment_shift=0)
    part = bundle.train if train else bundle.val
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(part.labels), generator=g)[:n]
    x = (part.images[idx].expand(-1, 3, -1, -1) - 0.5) / 0.5
    return x.contiguous(), part.labels[idx].long()


def _train_vit_digits(model, steps: int, batch: int, seed: int) -> float:
    """Dense AdamW (lr 2e-3, weight decay 0.05: vit_digits_fst's) on the digits training split."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    loss = float("nan")
    for step in range(steps):
        x, y = _digits(10_000 + 100 * seed + step, batch, train=True)
        out = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        out.backward()
        opt.step()
        loss = float(out)
    return loss


def build_case(case: str, seed: int, args) -> tuple:
    """(model, inputs, target, description) for one case and seed."""
    classes = len(images.shipped_photo_names())
    if case in ("resnet18_init", "resnet18_photos", "deit_tiny_init"):
        x, y = images.photo_crops(args.batch, seed=seed)
        if case == "deit_tiny_init":
            return _deit_tiny(seed, classes), x, y, "DeiT-Ti, random init, 224 px photographs"
        model = _resnet18(seed, classes)
        if case == "resnet18_init":
            return model, x, y, "ResNet-18, random init, 224 px photographs"
        loss = _train_photos(model, args.train_steps, args.batch, seed, args.train_lr)
        return (
            model,
            x,
            y,
            f"ResNet-18 after {args.train_steps} dense SGD steps on photograph crops "
            f"(last train loss {loss:.2f}), 224 px",
        )
    model = _vit_digits(seed)
    x, y = _digits(seed, args.vit_batch, train=False)
    if case == "vit_digits_init":
        return model, x, y, "vit_digits ViT (8x8 grid), random init, digits val"
    loss = _train_vit_digits(model, args.vit_train_steps, args.vit_batch, seed)
    return (
        model,
        x,
        y,
        f"vit_digits ViT after {args.vit_train_steps} dense AdamW steps on digits "
        f"(last train loss {loss:.2f}), digits val",
    )


def _mean_std(vals):
    t = torch.tensor([v for v in vals if v == v], dtype=torch.float64)
    if not len(t):
        return float("nan"), float("nan")
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0


def _read_csvs(d: Path) -> tuple[list[dict], list[dict]]:
    """The rows of an earlier run's ``gradient_fidelity{,_steps}.csv``, numbers parsed."""
    import csv

    def parse(v):
        if v in ("True", "False"):
            return v == "True"
        try:
            return int(v)
        except ValueError:
            pass
        try:
            return float(v)
        except ValueError:
            return v

    out = []
    for name in ("gradient_fidelity.csv", "gradient_fidelity_steps.csv"):
        path = d / name
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist; pass the --out of an earlier run")
        with open(path, newline="") as f:
            out.append([{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)])
    return out[0], out[1]


def _depth(r):
    return r["depth"]


def summarise(layer_rows, step_rows, cases, strategies):
    """Per case and strategy: means over seeds of the per-layer curves' key points."""
    out = []
    for case in cases:
        for s in strategies:
            rows = [r for r in layer_rows if r["case"] == case and r["strategy"] == s]
            if not rows:
                continue
            seeds = sorted({r["seed"] for r in rows})
            depth_max = max(r["depth"] for r in rows)

            def per_seed(kind, key, pick, rows=rows, seeds=seeds):
                vals = []
                for sd in seeds:
                    rr = [
                        r
                        for r in rows
                        if r["seed"] == sd
                        and r["kind"] == kind
                        and r["sparse"]
                        and r[key] == r[key]
                    ]
                    if rr:
                        vals.append(pick(rr, key))
                return vals

            def mean_of(rr, key):
                return sum(r[key] for r in rr) / len(rr)

            def near(rr, key):  # the quarter of the layers nearest the loss
                rr = sorted(rr, key=_depth)
                return mean_of(rr[-max(1, len(rr) // 4) :], key)

            def far(rr, key):  # the quarter farthest from the loss
                rr = sorted(rr, key=_depth)
                return mean_of(rr[: max(1, len(rr) // 4)], key)

            st = [r for r in step_rows if r["case"] == case and r["strategy"] == s]
            row = {"case": case, "strategy": s, "seeds": len(seeds), "layers": depth_max + 1}
            for name, kind, key, pick in (
                ("local_dw", "local", "dw_rel", mean_of),
                ("local_dx", "local", "dx_rel", mean_of),
                ("prop_dw", "propagated", "dw_rel", mean_of),
                ("local_dw_near", "local", "dw_rel", near),
                ("local_dw_far", "local", "dw_rel", far),
                ("prop_dw_near", "propagated", "dw_rel", near),
                ("prop_dw_far", "propagated", "dw_rel", far),
                ("local_dx_near", "local", "dx_rel", near),
                ("local_dx_far", "local", "dx_rel", far),
                ("prop_dx_near", "propagated", "dx_rel", near),
                ("prop_dx_far", "propagated", "dx_rel", far),
            ):
                m, sd = _mean_std(per_seed(kind, key, pick))
                row[name], row[name + "_std"] = m, sd
            for key in ("grad_cos", "first_order_ratio", "decrease_ratio"):
                m, sd = _mean_std([r.get(key, float("nan")) for r in st])
                row[key], row[key + "_std"] = m, sd
            out.append(row)
    return out


def plot(layer_rows, cases, strategies, path, titles):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("local", "dw_rel", "local dW error"),
        ("propagated", "dw_rel", "propagated dW error"),
        ("local", "dx_rel", "local dX error"),
        ("propagated", "dx_rel", "propagated dX error"),
    ]
    fig, axes = plt.subplots(
        len(panels), len(cases), figsize=(4.2 * len(cases), 3.0 * len(panels)), squeeze=False
    )
    cmap = plt.get_cmap("tab20")
    drawn = [s for s in strategies if s not in fidelity.ALIASES]
    for j, case in enumerate(cases):
        for i, (kind, key, label) in enumerate(panels):
            ax = axes[i][j]
            for k, s in enumerate(drawn):
                rows = [
                    r
                    for r in layer_rows
                    if r["case"] == case and r["strategy"] == s and r["kind"] == kind
                ]
                depths = sorted({r["depth"] for r in rows})
                mean, lo, hi, xs = [], [], [], []
                for d in depths:
                    v = [r[key] for r in rows if r["depth"] == d and r[key] == r[key]]
                    if not v:
                        continue
                    xs.append(d)
                    mean.append(sum(v) / len(v))
                    lo.append(min(v))
                    hi.append(max(v))
                if not xs:
                    continue
                name = "wx = wx_sort" if s == "wx" and "wx_sort" in strategies else s
                style = "--" if k >= 10 else "-"
                ax.plot(xs, mean, style, color=cmap(k), label=name, lw=1.2)
                ax.fill_between(xs, lo, hi, color=cmap(k), alpha=0.15, lw=0)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(0, None)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(titles[case], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{label}\n||g - g_exact|| / ||g_exact||", fontsize=8)
            if i == len(panels) - 1:
                ax.set_xlabel("layer (forward order; the loss is on the right)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), 7 if len(cases) > 2 else 3)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def key_numbers(summary, cases) -> str:
    """The issue's two questions, answered per case from the summary (means over seeds)."""
    lines = []
    for case in cases:
        by = {r["strategy"]: r for r in summary if r["case"] == case}

        def get(s, k, by=by):
            return by[s][k] if s in by else float("nan")

        parts = []
        for s in ("wg", "wx", "gg", "gx"):
            if s in by:
                parts.append(
                    f"{s} {get(s, 'prop_dw_near'):.2f} -> {get(s, 'prop_dw_far'):.2f} "
                    f"(local far {get(s, 'local_dw_far'):.2f})"
                )
        if parts:
            lines.append(
                f"- `{case}`, propagated dW error near the loss -> far from it: " + "; ".join(parts)
            )
        noir, ir, bound = (get(s, "local_dw") for s in ("fst_noir", "fst", "wx_sort"))
        if noir == noir and ir == ir and bound == bound:
            gap = noir - bound
            share = (noir - ir) / gap if gap else float("nan")
            lines.append(
                f"- `{case}`, local dW error (mean over layers): fst_noir {noir:.3f}, fst {ir:.3f}, "
                f"wx_sort {bound:.3f}: IR closes {share:.0%} of the gap to the sort-based S(X^T)"
            )
    return "\n".join(lines)


def _fmt(m, s):
    return "n/a" if m != m else f"{m:.3f} ± {s:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument(
        "--cases",
        nargs="+",
        default=list(DEFAULT_CASES),
        choices=CASES,
        help="default: resnet18_photos vit_digits_init vit_digits_trained (sized for 15 min on 2 "
        "busy CPU cores); results/gradient_fidelity.md has all five",
    )
    p.add_argument(
        "--strategies", nargs="+", default=list(fidelity.STUDIED), choices=fidelity.STUDIED
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds (0, 1, ...) of the 224 px cases")
    p.add_argument(
        "--vit-seeds", type=int, default=2, help="seeds of the vit_digits cases (cheap: 32 px)"
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed, first-seed + 1, ... (to add seeds to an earlier run)",
    )
    p.add_argument("--batch", type=int, default=16, help="photographs per batch (224 px)")
    p.add_argument("--train-steps", type=int, default=20, help="dense steps for resnet18_photos")
    p.add_argument("--train-lr", type=float, default=0.05)
    p.add_argument("--vit-batch", type=int, default=64, help="digits per batch (vit_digits)")
    p.add_argument("--vit-train-steps", type=int, default=300, help="for vit_digits_trained")
    p.add_argument("--lr", type=float, default=0.02, help="SGD step of the one-step loss decrease")
    p.add_argument(
        "--from-csv",
        nargs="+",
        default=None,
        metavar="DIR",
        help="measure nothing: rebuild the Markdown and the figure from the two CSV files of "
        "earlier runs in each DIR (rows pooled: runs of other seeds add up; their --cases, "
        "--strategies, --batch, --vit-batch and --lr must be given again)",
    )
    args = p.parse_args(argv)
    if args.batch < 1 or args.seeds < 1 or args.vit_seeds < 1:
        p.error("--batch, --seeds and --vit-seeds must be >= 1")

    t0 = time.time()
    layer_rows, step_rows, titles = [], [], {}
    if args.from_csv:
        layer_rows, step_rows = [], []
        for d in args.from_csv:
            rows, steps = _read_csvs(Path(d))
            layer_rows, step_rows = layer_rows + rows, step_rows + steps
        args.cases = [c for c in args.cases if any(r["case"] == c for r in step_rows)]
        titles = {r["case"]: r["weights"].split(" (last")[0] for r in step_rows}
    for case in [] if args.from_csv else args.cases:
        seeds = args.vit_seeds if case.startswith("vit_digits") else args.seeds
        for seed in range(args.first_seed, args.first_seed + seeds):
            tc = time.time()
            model, x, y, desc = build_case(case, seed, args)
            titles[case] = desc.split(" (last")[0]
            rows, steps = fidelity.measure(model, x, y, args.strategies, lr=args.lr, seed=seed)
            layer_rows += [{"case": case, "seed": seed, **r} for r in rows]
            step_rows += [{"case": case, "seed": seed, "weights": desc, **r} for r in steps]
            print(f"{case} seed {seed}: {desc}; {time.time() - tc:.0f} s", flush=True)
    elapsed = time.time() - t0

    out = Path(args.out)
    if not args.from_csv or all(Path(d).resolve() != out.resolve() for d in args.from_csv):
        report.write_csv(out / "gradient_fidelity.csv", layer_rows)
        report.write_csv(out / "gradient_fidelity_steps.csv", step_rows)
    summary = summarise(layer_rows, step_rows, args.cases, args.strategies)
    plot(layer_rows, args.cases, args.strategies, out / "gradient_fidelity.png", titles)

    sections = []
    for case in args.cases:
        weights = sorted({r["weights"] for r in step_rows if r["case"] == case})
        cols = (
            "local_dw_near", "local_dw_far", "prop_dw_near", "prop_dw_far",
            "local_dx_near", "local_dx_far", "prop_dx_near", "prop_dx_far",
            "grad_cos", "first_order_ratio", "decrease_ratio",
        )  # fmt: skip
        rows = [
            {"strategy": r["strategy"], **{c: _fmt(r[c], r[c + "_std"]) for c in cols}}
            for r in summary
            if r["case"] == case
        ]
        layers = next((r["layers"] for r in summary if r["case"] == case), 0)
        n_seeds = next((r["seeds"] for r in summary if r["case"] == case), 0)
        sections.append(
            f"### `{case}` ({layers} layers; {n_seeds} seed(s))\n\n"
            + "".join(f"- {w}\n" for w in weights)
            + "\n"
            + report.markdown_table(
                rows,
                list(rows[0].keys()) if rows else [],
                [
                    "strategy",
                    "local dW, near",
                    "local dW, far",
                    "prop. dW, near",
                    "prop. dW, far",
                    "local dX, near",
                    "local dX, far",
                    "prop. dX, near",
                    "prop. dX, far",
                    "grad cos",
                    "first-order ratio",
                    "loss decrease / exact",
                ],
            )
        )
    body = (
        "Relative L2 error ||g - g_exact|| / ||g_exact|| of each sparse layer's dW and dX, "
        "mean ± std over seeds; *local*: from the layer's exact dY; *propagated*: the whole "
        "backward pass with the strategy; *near*: mean over the quarter of the sparse layers "
        "nearest the loss (where backpropagation starts), *far*: over the quarter farthest from "
        "it (for dX: of the layers whose input needs one). "
        "Exact = the exact backward pass of the strategy's own forward network (S(W), T(W) or W; "
        "see `fst/analysis/fidelity.py`). `grad cos`: cosine of all parameters' gradient with "
        "the exact one; `first-order ratio` = <g, g_exact> / <g_exact, g_exact>, the small-step "
        "limit of the ratio of the loss decreases; `loss decrease / exact`: loss decrease of one SGD step (lr "
        f"{args.lr}) with the strategy's gradient over that with the exact gradient, same batch. "
        "`wx_sort` (dY S(X^T) with the sort-based magnitude mask, the bound IR approaches) has "
        "exactly `wx`'s rules and is computed once. `mvue_exact`: `mvue` with "
        f"`sparsity.estimator=exact`. Batch: {args.batch} photographs (224 px) or "
        f"{args.vit_batch} digits (32 px). "
        + (
            f"Rebuilt from the CSV files of {', '.join(f'`{d}`' for d in args.from_csv)} "
            "(measured earlier).\n\n"
            if args.from_csv
            else f"Wall time {elapsed:.0f} s.\n\n"
        )
        + "## Key numbers\n\n"
        + key_numbers(summary, args.cases)
        + "\n\n## Per case\n\n"
        + "\n\n".join(sections)
        + "\n\n![gradient fidelity](gradient_fidelity.png)\n"
    )
    report.write_markdown(
        out / "gradient_fidelity.md", "Gradient fidelity of the strategies (issue 24)", body
    )
    cols = ("strategy", "local_dw", "prop_dw_near", "prop_dw_far", "grad_cos", "decrease_ratio")
    for case in args.cases:
        print(f"\n{case}")
        print("  ".join(f"{c:>14s}" for c in cols))
        for r in summary:
            if r["case"] == case:
                print(
                    "  ".join(f"{r[c]:>14.4f}" if c != "strategy" else f"{r[c]:>14s}" for c in cols)
                )
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 1),
                "out": str(out),
                "cases": args.cases,
                "seeds": {"224px": args.seeds, "vit_digits": args.vit_seeds},
                "grad_cos": {
                    f"{r['case']}/{r['strategy']}": round(r["grad_cos"], 4) for r in summary
                },
            }
        )
    )


if __name__ == "__main__":
    main()
