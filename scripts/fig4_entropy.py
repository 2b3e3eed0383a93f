"""Figure 4: H(X) and H(X|X') of conv inputs of ResNet-18, natural images vs white noise.

    python scripts/fig4_entropy.py [--images 64] [--checkpoint PATH] [--image-folder DIR]

Natural images are random 224px crops of the photographs shipped with scikit-image and
scikit-learn (or of ``--image-folder``, e.g. an ImageNet val folder); white noise is i.i.d.
uniform pixels. Without ``--checkpoint`` the network is randomly initialised (seeded) and the
figure says so. Writes ``fig4_entropy.{csv,md,png}`` (``fig4_entropy_per_channel.*`` with ``--per-channel``).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fst.analysis import capture, entropy, images, report  # noqa: E402

# The image itself (input of conv1) anchors the scale: i.i.d. noise pixels have no neighbour
# information, natural photographs a lot.
LAYERS = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument("--images", type=int, default=64, help="images per input kind (paper: 1000)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--layers", nargs="+", default=LAYERS, help="conv layers whose input X is measured"
    )
    p.add_argument("--checkpoint", default=None, help="trained ResNet-18 state_dict (local file)")
    p.add_argument(
        "--image-folder", default=None, help="folder of natural images instead of the shipped ones"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-channel", action="store_true", help="quantise each channel on its own")
    args = p.parse_args(argv)

    model, weights = capture.resnet18(args.checkpoint, args.seed)
    inputs = {
        "natural": images.natural_images(args.images, seed=args.seed, folder=args.image_folder),
        "white noise": images.white_noise(args.images, seed=args.seed),
    }
    results, csv_rows = {}, []
    for kind, x in inputs.items():
        feats: dict[str, list[torch.Tensor]] = {n: [] for n in args.layers}
        for i in tqdm(range(0, len(x), args.batch), desc=f"fig4 {kind}"):
            for n, f in capture.conv_inputs(model, x[i : i + args.batch], args.layers).items():
                feats[n].append(f)
        rows = entropy.layer_entropies(
            {n: torch.cat(v) for n, v in feats.items()}, per_channel=args.per_channel
        )
        results[kind] = rows
        csv_rows += [{"input": kind, **r} for r in rows]

    out = Path(args.out)
    source = (
        args.image_folder
        or "photographs shipped with scikit-image and scikit-learn (random 224px crops)"
    )
    stem = "fig4_entropy_per_channel" if args.per_channel else "fig4_entropy"
    report.write_csv(out / f"{stem}.csv", csv_rows)
    fmt = [
        {
            **r,
            **{
                k: f"{r[k]:.3f} ± {r[k + '_std']:.3f}"
                for k in ("H_X", "H_X_given_Xadj", "similarity")
            },
        }
        for r in csv_rows
    ]
    body = (
        f"ResNet-18 weights: {weights}. Natural inputs: {source}; white noise: i.i.d. uniform pixels. "
        f"{args.images} images per kind (the paper averages 1000 ImageNet images over a trained network). "
        + (
            "Each channel of a conv input X is quantised on its own (entropies averaged over channels)"
            if args.per_channel
            else "Each conv input X (one image's [C, H, W] map) is quantised as a whole"
        )
        + " uniformly to 256 bins between its min and max; X' is the horizontally adjacent element (the adjacent im2col column). Bits, mean ± std "
        "over 4 disjoint groups of images (values from all images' counts pooled, Miller-Madow corrected; "
        "the white-noise `conv1` row, whose true gap is 0, shows the residual estimator bias); "
        "similarity = H(X) - H(X|X').\n\n"
        + report.markdown_table(
            fmt,
            ["input", "layer", "shape", "H_X", "H_X_given_Xadj", "similarity"],
            ["input", "conv input of", "C x H x W", "H(X)", "H(X|X')", "H(X) - H(X|X')"],
        )
    )
    report.write_markdown(
        out / f"{stem}.md", "Figure 4: entropy and conditional entropy of conv inputs", body
    )
    entropy.plot_entropies(
        results,
        out / f"{stem}.png",
        f"ResNet-18, {weights}; natural: {'folder' if args.image_folder else 'shipped photographs'}",
    )
    for r in csv_rows:
        print(
            f"{r['input']:12s} {r['layer']:16s} H(X)={r['H_X']:.3f} H(X|X')={r['H_X_given_Xadj']:.3f}"
        )


if __name__ == "__main__":
    main()
