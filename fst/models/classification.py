"""Classification models: torchvision ResNet-18/50 (optional 32 px stem) and any timm model.

Every builder takes ``num_classes`` and ``pretrained`` (a *local* state_dict path or ``None``);
nothing is ever downloaded. Builders return dense ``nn.Module``s; the engine sparsifies them.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from . import MODELS


def _small_stem(model: nn.Module) -> None:
    """Replace the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1 conv (CIFAR-style, for 32 px).

    With the ImageNet stem a 32 px image is 1x1 after layer4; with this one it is 4x4.
    """
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def load_pretrained(model: nn.Module, path: str | None) -> nn.Module:
    """Load a local state_dict (or an fst checkpoint holding one under ``"model"``) into ``model``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` listing differing keys.
    """
    if path is None:
        return model
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"model.pretrained={path!r} does not exist; pretrained weights are only read from a "
            "local file (a state_dict saved with torch.save), never downloaded"
        )
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"pretrained weights {p.name} do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatch {shapes[:5]} "
            "(check model.num_classes / model.small_stem against the weights)"
        )
    model.load_state_dict(sd)
    return model


def _resnet(
    fn,
    num_classes: int | None,
    small_stem: bool,
    pretrained: str | None,
    zero_init_residual: bool,
) -> nn.Module:
    if num_classes is None:
        raise ValueError("model.num_classes is unknown; set it or data.num_classes")
    model = fn(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    if small_stem:
        _small_stem(model)
    return load_pretrained(model, pretrained)


@MODELS.register("resnet18")
def resnet18(
    num_classes: int | None = 1000,
    small_stem: bool = False,
    pretrained: str | None = None,
    zero_init_residual: bool = False,
) -> nn.Module:
    """torchvision ResNet-18; input ``[B, 3, H, W]``, output logits ``[B, num_classes]``."""
    from torchvision.models import resnet18 as tv

    return _resnet(tv, num_classes, small_stem, pretrained, zero_init_residual)


@MODELS.register("resnet50")
def resnet50(
    num_classes: int | None = 1000,
    small_stem: bool = False,
    pretrained: str | None = None,
    zero_init_residual: bool = False,
) -> nn.Module:
    """torchvision ResNet-50; input ``[B, 3, H, W]``, output logits ``[B, num_classes]``."""
    from torchvision.models import resnet50 as tv

    return _resnet(tv, num_classes, small_stem, pretrained, zero_init_residual)


@MODELS.register("timm")
def timm_model(
    arch: str = "resnet18",
    num_classes: int | None = 1000,
    pretrained: str | None = None,
    kwargs: dict | None = None,
) -> nn.Module:
    """Any ``timm`` architecture by name (``timm.create_model(arch, pretrained=False, ...)``)."""
    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(
            f"model.arch={arch!r} is not a timm model"
            + (f"; did you mean: {', '.join(close)}" if close else "")
            + " (see timm.list_models())"
        )
    if num_classes is None:
        raise ValueError("model.num_classes is unknown; set it or data.num_classes")
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **(kwargs or {}))
    return load_pretrained(model, pretrained)
