"""Classification models: ResNet stems, timm by name, local pretrained weights only."""

from __future__ import annotations

import pytest
import torch

from fst.models import MODELS


def test_small_stem_keeps_spatial_size():
    m = MODELS.get("resnet18")(num_classes=10, small_stem=True)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    feats = {}

    def hook(mod, inp, out):
        feats["l4"] = out.shape

    m.layer4.register_forward_hook(hook)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert feats["l4"][-2:] == (4, 4)


def test_timm_by_name_and_unknown_name():
    m = MODELS.get("timm")(arch="test_resnet", num_classes=7)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="not a timm model.*test_resnet"):
        MODELS.get("timm")(arch="test_resnett", num_classes=7)


def test_pretrained_from_local_file(tmp_path):
    src = MODELS.get("resnet18")(num_classes=5, small_stem=True)
    path = tmp_path / "w.pt"
    torch.save({"model": src.state_dict()}, path)  # an fst checkpoint layout
    m = MODELS.get("resnet18")(num_classes=5, small_stem=True, pretrained=str(path))
    assert torch.equal(m.fc.weight, src.fc.weight)
    with pytest.raises(ValueError, match="do not fit.*num_classes"):
        MODELS.get("resnet18")(num_classes=6, small_stem=True, pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        MODELS.get("resnet18")(num_classes=5, pretrained=str(tmp_path / "missing.pt"))
