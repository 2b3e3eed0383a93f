"""The Table 4 detectors: torchvision's architectures, every layer convertible, local weights only."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn, ssd300_vgg16
from torchvision.models.vgg import cfgs, make_layers

import fst
from fst.layers import SparseConv2d, SparseLinear
from fst.models import MODELS

# CPU-sized Faster R-CNN (the embedded experiment's reductions).
SMALL_FRCNN = dict(
    min_size=64, max_size=64, width_per_group=16, fpn_channels=64, representation_size=64,
    anchor_sizes=(8, 16, 32, 64, 128), rpn_post_nms_top_n_train=50, rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=16, norm="bn",
)  # fmt: skip


def _layers(model):
    """Every layer fst.sparsify is meant to convert: groups=1 convs and linears."""
    return [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    ]  # fmt: skip


def _same_architecture(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)


def test_defaults_are_torchvisions_fasterrcnn():
    with torch.device("meta"):  # shapes only: no weight init
        ours = MODELS["fasterrcnn_r50_fpn"](num_classes=90)
        _same_architecture(
            ours, fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        )
    assert isinstance(ours.backbone.body.bn1, nn.BatchNorm2d)  # no backbone weights: trainable BN


def test_defaults_are_torchvisions_ssd():
    with torch.device("meta"):
        ours = MODELS["ssd300_vgg16"](num_classes=90)
        _same_architecture(ours, ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91))


@pytest.mark.parametrize("name,kwargs", [("fasterrcnn_r50_fpn", SMALL_FRCNN), ("ssd300_vgg16", {})])
def test_every_conv_and_linear_becomes_sparse(name, kwargs):
    model = MODELS[name](num_classes=3, **kwargs)
    expected = [n for n, _ in _layers(model)]
    fst.sparsify(model, strategy="fst")
    converted = {n for n, m in model.named_modules() if isinstance(m, (SparseConv2d, SparseLinear))}
    assert converted == set(expected)
    # backbone, neck and heads are all in there
    prefixes = {"fasterrcnn_r50_fpn": ["backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box_head.", "roi_heads.box_predictor."],
                "ssd300_vgg16": ["backbone.features.", "backbone.extra.", "head.classification_head.", "head.regression_head."]}[name]  # fmt: skip
    for p in prefixes:
        assert any(n.startswith(p) for n in converted), p


def test_exclude_keeps_layers_dense():
    model = MODELS["fasterrcnn_r50_fpn"](num_classes=3, **SMALL_FRCNN)
    fst.sparsify(
        model, strategy="fst", exclude=["backbone.body.conv1", "roi_heads.box_predictor.*"]
    )
    assert not isinstance(model.backbone.body.conv1, SparseConv2d)
    assert not isinstance(model.roi_heads.box_predictor.cls_score, SparseLinear)
    assert isinstance(model.roi_heads.box_head.fc6, SparseLinear)


def test_backbone_weights_from_local_file(tmp_path):
    ref = resnet50(width_per_group=16)
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    model = MODELS["fasterrcnn_r50_fpn"](
        num_classes=3, **{**SMALL_FRCNN, "norm": "auto"}, backbone_weights=str(tmp_path / "r50.pth")
    )
    torch.testing.assert_close(
        model.backbone.body.layer3[2].conv2.weight, ref.layer3[2].conv2.weight
    )
    # pretrained -> torchvision's choices: frozen BN, stem and layer1 frozen
    assert type(model.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"
    torch.testing.assert_close(model.backbone.body.bn1.running_mean, ref.bn1.running_mean)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad

    with pytest.raises(ValueError, match="does not match"):  # a ResNet-50 of another width
        MODELS["fasterrcnn_r50_fpn"](num_classes=3, backbone_weights=str(tmp_path / "r50.pth"))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        MODELS["fasterrcnn_r50_fpn"](num_classes=3, backbone_weights=str(tmp_path / "none.pth"))


def test_vgg_backbone_weights_from_local_file(tmp_path):
    # torchvision vgg16's features (its classifier is 120M parameters SSD ignores; skip building it)
    ref = nn.Module()
    ref.features = make_layers(cfgs["D"])
    torch.save(ref.state_dict(), tmp_path / "vgg.pth")
    assert all(k.startswith("features.") for k in ref.state_dict())
    model = MODELS["ssd300_vgg16"](num_classes=3, backbone_weights=str(tmp_path / "vgg.pth"))
    torch.testing.assert_close(model.backbone.features[0].weight, ref.features[0].weight)
    assert not model.backbone.features[0].weight.requires_grad  # torchvision: 4 of 5 stages train


def test_full_weights_roundtrip_sparse_to_dense(tmp_path):
    torch.manual_seed(0)
    model = fst.sparsify(MODELS["fasterrcnn_r50_fpn"](num_classes=3, **SMALL_FRCNN), strategy="fst")
    torch.save(
        {"model": model.state_dict()}, tmp_path / "best.pt"
    )  # a checkpoint, as the engine writes
    torch.manual_seed(1)
    again = MODELS["fasterrcnn_r50_fpn"](
        num_classes=3, **SMALL_FRCNN, weights=str(tmp_path / "best.pt")
    )
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    with pytest.raises(ValueError, match="does not match"):
        MODELS["fasterrcnn_r50_fpn"](
            num_classes=5, **SMALL_FRCNN, weights=str(tmp_path / "best.pt")
        )


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="valid choices"):
        MODELS["fasterrcnn_r50_fpn"](num_classes=3, norm="layer")
    with pytest.raises(ValueError, match="one size per FPN level"):
        MODELS["fasterrcnn_r50_fpn"](num_classes=3, anchor_sizes=(32, 64))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        MODELS["ssd300_vgg16"](num_classes=3, trainable_backbone_layers=7)
