"""Optimizers and per-step schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fst.engine.optim import OPTIMIZERS, SCHEDULERS


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_decay_norm_and_bias_switch():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = OPTIMIZERS.get("sgd")(m, lr=0.1, weight_decay=1e-4, decay_norm_and_bias=False)
    decayed, plain = opt.param_groups
    assert [p.ndim for p in decayed["params"]] == [4] and decayed["weight_decay"] == 1e-4
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3
    opt = OPTIMIZERS.get("sgd")(m, lr=0.1, weight_decay=1e-4)
    assert len(opt.param_groups) == 1


def _lrs(name, steps=10, **kw):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = SCHEDULERS.get(name)(opt, total_steps=steps, steps_per_epoch=2, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, opt.param_groups[0]["lr"]


def test_cosine_anneals_to_min_lr():
    lrs, end = _lrs("cosine")
    assert lrs[0] == pytest.approx(0.1) and end == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[5] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_then_cosine():
    lrs, _ = _lrs("cosine", warmup_epochs=1, warmup_start_factor=0.1)  # 2 warm-up steps
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.055)
    assert lrs[2] == pytest.approx(0.1)


def test_step_schedule():
    lrs, _ = _lrs("step", milestones=[2, 4], gamma=0.1)
    assert lrs[3] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.01)
    assert lrs[8] == pytest.approx(0.001)
