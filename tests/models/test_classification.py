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
        MODELS.get("resnet18")(
            num_classes=6, small_stem=True, pretrained=str(path), pretrained_strict=True
        )
    with pytest.raises(ValueError, match=r"do not fit.*conv1\.weight.*model\.small_stem"):
        MODELS.get("resnet18")(num_classes=5, small_stem=False, pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        MODELS.get("resnet18")(num_classes=5, pretrained=str(tmp_path / "missing.pt"))


def test_finetune_torchvision_resnet18_state_dict_reinitialises_the_head(tmp_path, caplog):
    """Issue 26: an ImageNet-layout torchvision resnet18 state_dict (1000 classes; random init
    saved locally, nothing downloaded) fine-tunes a 10-class model: all but fc load."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    src = resnet18(weights=None)
    path = tmp_path / "resnet18-local.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)
    fresh_fc = MODELS.get("resnet18")(num_classes=10).fc.weight.clone()
    torch.manual_seed(1)
    with caplog.at_level("WARNING"):
        m = MODELS.get("resnet18")(num_classes=10, pretrained=str(path))
    assert torch.equal(m.conv1.weight, src.conv1.weight)
    assert torch.equal(m.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)
    assert m.fc.weight.shape == (10, 512) and torch.equal(m.fc.weight, fresh_fc)
    lines = [r.getMessage() for r in caplog.records if "model.pretrained" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "loaded 120 of 122 tensors" in lines[0] and "head fc re-initialised" in lines[0]
    assert "(1000, 512)" in lines[0] and "(10, 512)" in lines[0]
    assert "pretrained_strict=true" in lines[0]
