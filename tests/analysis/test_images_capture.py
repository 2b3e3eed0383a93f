import pytest
import torch
from torchvision.models import resnet18

from fst.analysis import capture, images


def test_natural_images_are_deterministic_and_normalised():
    a = images.natural_images(3, size=64, seed=1)
    b = images.natural_images(3, size=64, seed=1)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b)
    assert -3 < float(a.mean()) < 3


def test_image_folder(tmp_path):
    from skimage import io

    io.imsave(tmp_path / "a.png", (torch.rand(80, 90, 3) * 255).byte().numpy())
    assert images.natural_images(2, size=64, folder=str(tmp_path)).shape == (2, 3, 64, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        images.natural_images(1, folder=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        images.natural_images(1, folder=str(tmp_path / "missing"))


def test_white_noise_shape():
    assert images.white_noise(2, size=32).shape == (2, 3, 32, 32)


def test_conv_inputs_shapes_and_unknown_name():
    model = resnet18().eval()
    feats = capture.conv_inputs(model, torch.randn(1, 3, 64, 64), ["conv1", "layer2.0.conv1"])
    assert feats["conv1"].shape == (1, 3, 64, 64) and feats["layer2.0.conv1"].shape == (
        1,
        64,
        16,
        16,
    )
    assert capture.conv_names(model)[5] == "layer2.0.conv1"  # the paper's "6th conv"
    with pytest.raises(KeyError, match="layer1.0.conv1"):
        capture.conv_inputs(model, torch.randn(1, 3, 32, 32), ["nope"])


def test_resnet18_checkpoint_round_trip(tmp_path):
    model, label = capture.resnet18(seed=3)
    assert "random init" in label
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pt")
    loaded, label = capture.resnet18(str(tmp_path / "ck.pt"))
    assert torch.equal(loaded.conv1.weight, model.conv1.weight) and "ck.pt" in label
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="fc.weight"):
        capture.resnet18(str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError):
        capture.resnet18(str(tmp_path / "missing.pt"))
