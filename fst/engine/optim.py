"""Optimizers and learning-rate schedules, one registry each (keys = ``configs/optim``/``sched`` stems).

Optimizer builders take the model first and the group's keys as keywords. Schedule builders take
the optimizer first, then ``total_steps`` and ``steps_per_epoch`` (supplied by the engine), then
the group's keys; schedules are stepped once per *optimizer step*, so the cosine anneals smoothly
to ``min_lr`` at the last step as in the paper's recipe ("annealed from 0.1 to 0").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fst.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Split parameters into decayed and non-decayed groups.

    With ``decay_norm_and_bias=False`` only tensors with ``ndim >= 2`` (conv/linear weights)
    are decayed, as in the authors' released training script.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


@OPTIMIZERS.register("sgd")
def sgd(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("adamw")
def adamw(
    model: nn.Module,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.05,
    decay_norm_and_bias: bool = False,
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def _warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Linear ramp from ``start_factor`` to 1 over ``warmup_steps`` steps (1 afterwards)."""
    if step >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * step / warmup_steps


@SCHEDULERS.register("cosine")
def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    warmup_start_factor: float = 0.1,
    min_lr: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2, t from 0 to 1 after warm-up."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    base = optimizer.param_groups[0]["lr"]
    floor = min_lr / base if base else 0.0

    def factor(step: int) -> float:
        if step < warm:
            return _warmup(step, warm, warmup_start_factor)
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("step")
def step(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    milestones: tuple[int, ...] = (30, 60, 90),
    gamma: float = 0.1,
    warmup_epochs: float = 0,
    warmup_start_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply the lr by ``gamma`` at each epoch listed in ``milestones``."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    ms = sorted(int(m) for m in milestones)

    def factor(s: int) -> float:
        epoch = s / steps_per_epoch
        return _warmup(s, warm, warmup_start_factor) * gamma ** sum(epoch >= m for m in ms)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("constant")
def constant(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    warmup_start_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant lr after an optional linear warm-up."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _warmup(s, warm, warmup_start_factor)
    )
