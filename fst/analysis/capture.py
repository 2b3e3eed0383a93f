"""Read the input ``X`` of chosen conv layers, and build the ResNet-18 the analyses probe."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18


def conv_names(model: nn.Module) -> list[str]:
    """Names of every ``nn.Conv2d`` in ``model``, in registration order.

    For torchvision ResNets this is also execution order (a block's ``downsample`` is
    registered, and run, after its ``conv2``).
    """
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def conv_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """One forward pass; returns ``{name: input of that conv}`` (``[N, Cin, H, W]``)."""
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise KeyError(
            f"no module named {missing} in the model; conv layers are: {', '.join(conv_names(model))}"
        )
    feats: dict[str, torch.Tensor] = {}
    handles = []
    for n in names:

        def hook(mod, args, n=n):
            feats[n] = args[0].detach().clone()

        handles.append(mods[n].register_forward_pre_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return feats


def resnet18(checkpoint: str | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """torchvision ResNet-18 in eval mode and a label saying which weights it holds.

    Without ``checkpoint`` the weights are a seeded random initialisation (nothing downloads).
    ``checkpoint``: a file saved with ``torch.save`` holding a state_dict, or a dict with the
    state_dict under ``"model"`` or ``"state_dict"``; the classifier size is read from it.
    Sparse layers keep ``weight``/``bias`` names, so fst checkpoints load here too.
    """
    if checkpoint is None:
        torch.manual_seed(seed)
        return tv_resnet18(weights=None).eval(), f"random init (seed {seed}), no trained checkpoint"
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} not found; pass the path of a saved ResNet-18 state_dict"
        )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    if "fc.weight" not in obj:
        raise ValueError(
            f"{checkpoint!r} does not hold a torchvision ResNet-18 state_dict (no 'fc.weight')"
        )
    model = tv_resnet18(weights=None, num_classes=obj["fc.weight"].shape[0])
    # Unexpected keys (e.g. mask buffers of sparse layers) are harmless; missing ones are not.
    missing = model.load_state_dict(obj, strict=False).missing_keys
    if missing:
        raise ValueError(
            f"{checkpoint!r} lacks ResNet-18 parameters {missing[:5]}...; is it a ResNet-18?"
        )
    return model.eval(), f"checkpoint {path.name}"
