"""Detectors of Table 4: torchvision's SSD300-VGG16 and Faster R-CNN ResNet-50-FPN.

The paper trained MMDetection's versions; torchvision's are the same architectures (mmcv has no
build for current PyTorch). Both are built without downloading anything: backbone weights come
only from ``backbone_weights`` (a local torchvision ``vgg16``/``resnet50`` state_dict) and full
weights only from ``weights`` (a local state_dict of this detector, dense or sparse: the names
are the same), read with ``torch.load(weights_only=True)``.

``num_classes`` counts object classes (K); the detectors get ``K + 1`` outputs (0 = background).
In training mode ``model(images, targets)`` returns a loss dict, in eval mode per-image
``{"boxes": [N, 4] xyxy pixels, "labels": [N], "scores": [N]}`` (torchvision's convention).
``fst.sparsify`` converts every groups=1 conv (backbone, FPN/extra layers, RPN/SSD heads) and
the box head's linears; keep some dense with ``sparsity.exclude``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.ssd import SSD, _vgg_extractor
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fst.types import ConfigError, MissingFileError

from . import MODELS


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file (``weights_only=True``); accepts a bare state_dict or a
    checkpoint holding one under ``"model"``/``"state_dict"``, and strips DDP's ``module.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"weights file {path} not found (weights are never downloaded; give a local path)"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise ConfigError(f"{path} holds a {type(sd).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load(
    module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, ignore: Sequence[str] = ()
) -> None:
    """Load ``sd`` into ``module`` requiring the same keys (apart from ``ignore`` prefixes and BN
    step counters, which FrozenBatchNorm2d does not keep)."""

    def keep(k: str) -> bool:
        return not k.endswith("num_batches_tracked") and not any(k.startswith(p) for p in ignore)

    sd = {k: v for k, v in sd.items() if keep(k)}
    own = {k: v.shape for k, v in module.state_dict().items() if keep(k)}
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k])}"
        for k in sorted(set(sd) & set(own))
        if sd[k].shape != own[k]
    ]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"{what} does not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"other shapes (file vs model) {shapes[:3]}{'...' if len(shapes) > 3 else ''}"
        )
    module.load_state_dict(sd, strict=False)


class _VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` (same names and init) without its 120M-parameter
    classifier, which SSD discards: ``_vgg_extractor`` only reads ``.features``."""

    def __init__(self):
        super().__init__()
        self.features = make_layers(vgg_cfgs["D"], batch_norm=False)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


def _trainable_layers(value: int | None, pretrained: bool, max_value: int, default: int) -> int:
    """torchvision's rule: every stage trains from scratch; ``default`` stages when pretrained."""
    if value is None:
        return default if pretrained else max_value
    if not 0 <= value <= max_value:
        raise ConfigError(f"trainable_backbone_layers={value} must be in [0, {max_value}]")
    return value


def _norm_layer(norm: str, pretrained: bool):
    if norm == "auto":  # torchvision: frozen statistics for a pretrained backbone, else BN
        norm = "frozen_bn" if pretrained else "bn"
    choices = {
        "frozen_bn": FrozenBatchNorm2d,
        "bn": nn.BatchNorm2d,
        "gn": lambda c: nn.GroupNorm(32, c),
    }
    if norm not in choices:
        raise ConfigError(f"unknown norm {norm!r}; valid choices: auto, {', '.join(choices)}")
    return choices[norm]


def _resnet_fpn(body: nn.Module, trainable_layers: int, out_channels: int) -> BackboneWithFPN:
    """torchvision's ``_resnet_fpn_extractor`` (freeze all but the last ``trainable_layers``
    stages; FPN on C2-C5 plus a max-pooled P6) with the FPN width as a parameter."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(t) for t in train):
            p.requires_grad_(False)
    c2 = body.inplanes // 8  # layer1's output width (256 for ResNet-50)
    return BackboneWithFPN(
        body,
        {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
        [c2 * 2 ** (k - 1) for k in (1, 2, 3, 4)],
        out_channels,
        extra_blocks=LastLevelMaxPool(),
    )


@MODELS.register("fasterrcnn_r50_fpn")
def fasterrcnn_r50_fpn(
    num_classes: int,
    min_size: int = 800,
    max_size: int = 1333,
    norm: str = "auto",
    trainable_backbone_layers: int | None = None,
    backbone_weights: str | None = None,
    weights: str | None = None,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    representation_size: int = 1024,
    fpn_channels: int = 256,
    width_per_group: int = 64,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a ResNet-50-FPN backbone (torchvision's ``fasterrcnn_resnet50_fpn``).

    Args:
        num_classes: object classes K (the predictor has K + 1 outputs).
        min_size, max_size: the internal resize (shorter side, longer-side cap), torchvision's
            defaults 800/1333.
        norm: backbone normalisation: ``auto`` (frozen BN with ``backbone_weights``, else BN, as
            torchvision), ``frozen_bn``, ``bn``, ``gn`` (GroupNorm, 32 groups).
        trainable_backbone_layers: ResNet stages trained (0-5); default 3 when pretrained, else 5.
        backbone_weights: local torchvision ``resnet50`` state_dict (``fc.*`` is ignored).
        weights: local state_dict of the whole detector (loaded last).
        anchor_sizes: one anchor size per FPN level (P2-P6); smaller for small images.
        representation_size: width of the two-layer box head (torchvision: 1024).
        fpn_channels: FPN/RPN width (torchvision: 256).
        width_per_group: ResNet bottleneck inner width per 64 planes (torchvision: 64; 16 makes
            every 3x3 conv 4x narrower, the stage outputs stay 256-2048 wide). The last three are
            only reduced for the CPU-sized embedded runs; the Table 4 rows use the defaults.
        **kwargs: passed to ``torchvision.models.detection.FasterRCNN`` (e.g.
            ``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``, ``box_score_thresh``).
    """
    pretrained = backbone_weights is not None
    body = resnet50(
        weights=None, norm_layer=_norm_layer(norm, pretrained), width_per_group=width_per_group
    )
    if backbone_weights:
        _load(
            body,
            load_state_dict_file(backbone_weights),
            "backbone_weights (resnet50)",
            ignore=("fc.",),
        )
    backbone = _resnet_fpn(
        body, _trainable_layers(trainable_backbone_layers, pretrained, 5, 3), fpn_channels
    )
    if len(anchor_sizes) != 5:
        raise ConfigError(
            f"anchor_sizes needs one size per FPN level (5), got {list(anchor_sizes)}"
        )
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), (tuple(aspect_ratios),) * 5)
    resolution = 7  # torchvision's MultiScaleRoIAlign output size
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(backbone.out_channels * resolution**2, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        **kwargs,
    )
    if weights:
        _load(model, load_state_dict_file(weights), "weights (fasterrcnn_r50_fpn)")
    return model


@MODELS.register("ssd300_vgg16")
def ssd300_vgg16(
    num_classes: int,
    trainable_backbone_layers: int | None = None,
    backbone_weights: str | None = None,
    weights: str | None = None,
    image_mean: Sequence[float] = (0.48235, 0.45882, 0.40784),
    image_std: Sequence[float] = (1.0 / 255, 1.0 / 255, 1.0 / 255),
    anchor_scales: Sequence[float] = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    **kwargs: Any,
) -> SSD:
    """SSD300 with a VGG16 backbone (torchvision's ``ssd300_vgg16``; input fixed at 300x300).

    Args:
        num_classes: object classes K (the heads have K + 1 outputs).
        trainable_backbone_layers: VGG stages trained (0-5); default 4 when pretrained, else 5.
        backbone_weights: local torchvision ``vgg16`` state_dict (``features.*`` is used).
        weights: local state_dict of the whole detector (loaded last).
        image_mean, image_std: input normalisation. The defaults are torchvision's for its
            Caffe-converted VGG16 features (pixels in 0-255); ImageNet-normalised VGG16 weights
            want ``[0.485, 0.456, 0.406]`` / ``[0.229, 0.224, 0.225]``.
        anchor_scales: default-box scales of the six feature maps plus one (torchvision's COCO
            values; the SSD paper's VOC values are ``[0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05]``).
        **kwargs: passed to ``torchvision.models.detection.SSD`` (e.g. ``score_thresh``,
            ``detections_per_img``, ``topk_candidates``).
    """
    pretrained = backbone_weights is not None
    vgg = _VGG16Features()
    if backbone_weights:
        _load(
            vgg,
            load_state_dict_file(backbone_weights),
            "backbone_weights (vgg16)",
            ignore=("classifier.",),
        )
    backbone = _vgg_extractor(
        vgg, False, _trainable_layers(trainable_backbone_layers, pretrained, 5, 4)
    )
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[float(x) for x in anchor_scales],
        steps=[8, 16, 32, 64, 100, 300],
    )
    model = SSD(
        backbone,
        anchors,
        (300, 300),
        num_classes + 1,
        image_mean=list(image_mean),
        image_std=list(image_std),
        **kwargs,
    )
    if weights:
        _load(model, load_state_dict_file(weights), "weights (ssd300_vgg16)")
    return model
