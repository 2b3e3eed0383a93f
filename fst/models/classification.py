"""Classification models: torchvision ResNet-18/50 (optional 32 px stem), timm vision
transformers (ViT / DeiT, any image and patch size) and any timm model.

Every builder takes ``num_classes`` and ``pretrained`` (a *local* state_dict path or ``None``);
nothing is ever downloaded. Pretrained weights fine-tune: a classifier head of another size is
re-initialised (``pretrained_strict=True`` refuses instead, see :func:`load_pretrained`). Builders return dense ``nn.Module``s; the engine sparsifies them.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from fst.types import ConfigError, MissingFileError

from . import MODELS

log = logging.getLogger(__name__)


def _small_stem(model: nn.Module) -> None:
    """Replace the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1 conv (CIFAR-style, for 32 px).

    With the ImageNet stem a 32 px image is 1x1 after layer4; with this one it is 4x4.
    """
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of ``model``'s classifier head(s): timm's ``pretrained_cfg["classifier"]``
    (``head``, ``fc``, ``head.fc``; distilled DeiTs also ``head_dist``), else torchvision's
    ``fc``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    if names:
        names = [names] if isinstance(names, str) else list(names)
    else:
        names = ["fc"] if isinstance(getattr(model, "fc", None), nn.Linear) else []
    modules = dict(model.named_modules())
    return [n for n in names if n in modules]


def load_pretrained(model: nn.Module, path: str | None, strict: bool = False) -> nn.Module:
    """Load a local state_dict (or an fst checkpoint holding one under ``"model"``) into ``model``.

    Fine-tuning (``strict=False``): every tensor outside the classifier head must fit; a head of
    another size (e.g. ImageNet's 1000 classes for a 10-class data set) keeps its fresh
    initialisation and one line says so. ``strict=True`` (``model.pretrained_strict=true``):
    every tensor must fit, head included. Raises ``MissingFileError`` for a missing file and
    ``ConfigError`` listing the tensors that do not fit.
    """
    if path is None:
        return model
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(
            f"model.pretrained={path!r} does not exist; pretrained weights are only read from a "
            "local file (a state_dict saved with torch.save), never downloaded"
        )
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}
    own = model.state_dict()
    heads = [] if strict else classifier_names(model)

    def in_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    skipped = [k for k in own if in_head(k) and (k not in sd or k in shapes)]
    bad_missing = [k for k in missing if not in_head(k)]
    bad_unexpected = [k for k in unexpected if not in_head(k)]
    bad_shapes = [k for k in shapes if not in_head(k)]
    if bad_missing or bad_unexpected or bad_shapes:
        fix = (
            "check model.num_classes / model.small_stem against the weights, or drop "
            "model.pretrained_strict=true to re-initialise a classifier head of another size"
            if strict
            else "check the architecture, model.small_stem, model.width or the image and patch "
            "size against the weights"
        )
        raise ConfigError(
            f"pretrained weights {p.name} do not fit the model: missing {bad_missing[:5]}, "
            f"unexpected {bad_unexpected[:5]}, shape mismatch {bad_shapes[:5]} ({fix})"
        )
    load = {k: v for k, v in sd.items() if k in own and k not in skipped}
    model.load_state_dict(load, strict=False)
    if skipped:
        theirs = [tuple(sd[k].shape) for k in skipped if k in sd and k.endswith("weight")]
        mine = [tuple(own[k].shape) for k in skipped if k.endswith("weight")]
        log.warning(
            "model.pretrained: loaded %d of %d tensors from %s; classifier head %s "
            "re-initialised (weights %s, model %s; model.pretrained_strict=true refuses instead)",
            len(load),
            len(own),
            p.name,
            "+".join(sorted({k.rsplit(".", 1)[0] for k in skipped})),
            theirs[0] if theirs else "absent",
            mine[0] if mine else "?",
        )
    return model


def _set_width(model: nn.Module, width: int, num_classes: int) -> None:
    """Rebuild stem, stages and classifier with ``width, 2*width, 4*width, 8*width`` channels.

    Same depth, strides and block types as the torchvision model (64 = the original); used
    to make the embedded-scale tables affordable on a CPU (width 16 has ~1/16 of the MACs).
    """
    block = type(model.layer1[0])
    depths = [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)]
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    for i, depth in enumerate(depths):
        stage = model._make_layer(block, width * 2**i, depth, stride=1 if i == 0 else 2)
        setattr(model, f"layer{i + 1}", stage)
    model.fc = nn.Linear(8 * width * block.expansion, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet(
    fn,
    num_classes: int | None,
    small_stem: bool,
    pretrained: str | None,
    zero_init_residual: bool,
    width: int = 64,
    pretrained_strict: bool = False,
) -> nn.Module:
    if num_classes is None:
        raise ConfigError("model.num_classes is unknown; set it or data.num_classes")
    if width < 1:
        raise ConfigError(
            f"model.width must be a positive channel count (64 = torchvision's), got {width}"
        )
    model = fn(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    if width != 64:
        _set_width(model, width, num_classes)
    if small_stem:
        _small_stem(model)
    return load_pretrained(model, pretrained, pretrained_strict)


@MODELS.register("resnet18")
def resnet18(
    num_classes: int | None = 1000,
    small_stem: bool = False,
    pretrained: str | None = None,
    zero_init_residual: bool = False,
    width: int = 64,
    pretrained_strict: bool = False,
) -> nn.Module:
    """torchvision ResNet-18; input ``[B, 3, H, W]``, output logits ``[B, num_classes]``.

    ``width``: channels of the first stage (64 = torchvision's; 16 for cheap embedded runs).
    """
    return _resnet(
        tv_resnet18,
        num_classes,
        small_stem,
        pretrained,
        zero_init_residual,
        width,
        pretrained_strict,
    )


@MODELS.register("resnet50")
def resnet50(
    num_classes: int | None = 1000,
    small_stem: bool = False,
    pretrained: str | None = None,
    zero_init_residual: bool = False,
    width: int = 64,
    pretrained_strict: bool = False,
) -> nn.Module:
    """torchvision ResNet-50; input ``[B, 3, H, W]``, output logits ``[B, num_classes]``.

    ``width``: channels of the first stage (64 = torchvision's).
    """
    return _resnet(
        tv_resnet50,
        num_classes,
        small_stem,
        pretrained,
        zero_init_residual,
        width,
        pretrained_strict,
    )


@MODELS.register("timm")
def timm_model(
    arch: str = "resnet18",
    num_classes: int | None = 1000,
    pretrained: str | None = None,
    kwargs: dict | None = None,
    pretrained_strict: bool = False,
) -> nn.Module:
    """Any ``timm`` architecture by name (``timm.create_model(arch, pretrained=False, ...)``)."""
    import timm  # at first use: ~0.9 s (and wandb) that ResNet runs need not pay at start-up

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ConfigError(
            f"model.arch={arch!r} is not a timm model"
            + (f"; did you mean: {', '.join(close)}" if close else "")
            + " (see timm.list_models())"
        )
    if num_classes is None:
        raise ConfigError("model.num_classes is unknown; set it or data.num_classes")
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **(kwargs or {}))
    return load_pretrained(model, pretrained, pretrained_strict)


#: A patch grid smaller than this per side, from the architecture's own patch size (the user
#: did not choose it), is refused: ``model=vit`` on 32 px digits would be 2x2 patches of 16 px.
MIN_DEFAULT_GRID = 4

_VIT_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


@MODELS.register("vit")
def vit(
    arch: str = "deit_tiny_patch16_224",
    num_classes: int | None = 1000,
    img_size: int = 224,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    drop_path_rate: float = 0.0,
    pretrained: str | None = None,
    kwargs: dict | None = None,
    pretrained_strict: bool = False,
) -> nn.Module:
    """A timm vision transformer (``deit_tiny_patch16_224``, ``deit_small_patch16_224``,
    ``vit_base_patch16_224``, ...) built from scratch; input ``[B, 3, img_size, img_size]``,
    output logits ``[B, num_classes]``.

    ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio`` override the
    architecture's (None: keep them), e.g. ``img_size=32, patch_size=4`` for 32 px images
    (an 8 x 8 patch grid). Tokens: the class token (and any register / distillation tokens),
    then the patch grid in raster order; :func:`fst.sparsify` gives the blocks' Linear layers
    this layout (:mod:`fst.tokens`) so that Eq. 3 pairs each patch with its right neighbour in
    the same grid row. Weights only from ``pretrained`` (a local file).
    """
    import timm  # at first use (see timm_model)
    from timm.models import is_model_in_modules

    if not timm.is_model(arch) or not is_model_in_modules(arch, ["vision_transformer", "deit"]):
        names = timm.list_models(module=["vision_transformer", "deit"])
        close = difflib.get_close_matches(arch, names, n=5)
        raise ValueError(
            f"model.arch={arch!r} is not a timm ViT / DeiT"
            + (f"; did you mean: {', '.join(close)}" if close else "")
            + " (other timm models: model=timm model.arch=NAME)"
        )
    if num_classes is None:
        raise ValueError("model.num_classes is unknown; set it or data.num_classes")
    args = dict(kwargs or {})
    if args.get("dynamic_img_size"):
        raise ValueError(
            "model.kwargs.dynamic_img_size=true: the patch grid would follow each input, but "
            "Eq. 3's token pairing needs a fixed grid; build the model at the size it runs at"
        )
    overrides = dict(zip(_VIT_OVERRIDES, (patch_size, embed_dim, depth, num_heads, mlp_ratio)))
    args.update({k: v for k, v in overrides.items() if v is not None})
    model = timm.create_model(
        arch,
        pretrained=False,
        num_classes=num_classes,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
        **args,
    )
    patch = model.patch_embed.patch_size
    grid = min(img_size // patch[0], img_size // patch[1])
    if patch_size is None and grid < MIN_DEFAULT_GRID:
        fit = max(1, img_size // 8)
        raise ConfigError(
            f"model=vit at {img_size} px with {arch}'s own {patch[0]} px patches is a "
            f"{grid}x{grid} patch grid; set model.patch_size={fit} (an "
            f"{img_size // fit}x{img_size // fit} grid), e.g. +experiment=vit_digits_fst on digits"
        )
    if img_size % patch[0] or img_size % patch[1]:
        raise ValueError(
            f"model.img_size={img_size} is not a multiple of the patch size {tuple(patch)}: "
            "the last pixels would be dropped; pick data.image_size / model.patch_size to fit"
        )
    return load_pretrained(model, pretrained, pretrained_strict)
