"""Figure 5: conv inputs X, adjacent-difference maps |X^ad| and reconstructions X^r.

    python scripts/fig5_features.py [--convs 6 11] [--checkpoint PATH] [--image-folder DIR]

``--convs`` counts ResNet-18's ``nn.Conv2d`` layers from 1 in execution order (downsample
convs included): 6 is ``layer2.0.conv1``, 11 is ``layer3.0.conv1``. Shows the channel with the
largest variance of one natural image; the statistics under each row cover all channels of
``--images`` images. Writes ``fig5_features.{png,csv,md}``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from fst.analysis import capture, features, images, report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="outputs/analysis", help="output directory (results/ only when asked)"
    )
    p.add_argument("--convs", nargs="+", type=int, default=[6, 11], help="1-based conv indices")
    p.add_argument("--images", type=int, default=8, help="images the statistics cover")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--image-folder", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    model, weights = capture.resnet18(args.checkpoint, args.seed)
    names = capture.conv_names(model)
    bad = [i for i in args.convs if not 1 <= i <= len(names)]
    if bad:
        raise SystemExit(f"--convs {bad} out of range: ResNet-18 has convs 1..{len(names)}")
    layers = {f"conv {i} ({names[i - 1]})": names[i - 1] for i in args.convs}
    x = images.natural_images(args.images, seed=args.seed, folder=args.image_folder)
    feats = capture.conv_inputs(model, x, list(layers.values()))

    entries, rows = {}, []
    for label, name in layers.items():
        f = feats[name]
        ch = features.most_varied_channel(f[0])
        stats = features.similarity_stats(f)
        entries[label] = {"maps": features.display_maps(f[0, ch]), "stats": stats}
        rows.append(
            {"conv": label, "shape": "x".join(map(str, f.shape[1:])), "channel_shown": ch, **stats}
        )
    # Undo the ImageNet normalisation for display.
    mean = images.torch.tensor(images.IMAGENET_MEAN).view(3, 1, 1)
    std = images.torch.tensor(images.IMAGENET_STD).view(3, 1, 1)
    shown = x[0] * std + mean

    out = Path(args.out)
    report.write_csv(out / "fig5_features.csv", rows)
    body = (
        f"ResNet-18 weights: {weights}. Input: natural image crops "
        f"({args.image_folder or 'photographs shipped with scikit-image / scikit-learn'}). "
        "X^ad[:, i] = X[:, i] - X[:, i+1]; X^r keeps even columns and copies each into the next "
        "(odd) column. Statistics over all channels of "
        f"{args.images} images, each map scaled by its own range: mean |X^ad| / range, share of "
        "positions with |X^ad| < 0.05 range, and ||X - X^r|| / ||X||.\n\n"
        + report.markdown_table(
            rows,
            ["conv", "shape", "channel_shown", "mean_abs_ad", "share_ad_below_0.05", "rel_err_r"],
        )
    )
    report.write_markdown(
        out / "fig5_features.md", "Figure 5: features, adjacent differences, reconstructions", body
    )
    features.plot_features(
        shown,
        entries,
        out / "fig5_features.png",
        f"ResNet-18, {weights}; values scaled to [0, 1] by each map's range",
    )
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
