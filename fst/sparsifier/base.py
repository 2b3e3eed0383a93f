"""The sparsifier: per-layer state that lives across training steps, shaped like ``torch.optim``.

Some strategies keep masks (DPF, RigL, ASP) or gradients (ReSprop) between steps and change
them on a schedule. Their state lives in one :class:`Sparsifier` per model:

- ``state``: ``{parameter name: {key: tensor | number}}``, e.g.
  ``state["layer1.0.conv1.weight"]["mask"]`` (bool, shaped like the weight, True = keep).
  Each sparse layer holds the same dict as ``layer.rule_state``; the backends hand it to the
  layer's GEMM rules (:mod:`fst.rules.base`, "Per-layer state"), which read (and, for
  ReSprop, write) the keys they list in ``state_keys``. Nothing else looks inside.
- ``step()``: called once after every optimizer step that was taken (not after a skipped,
  non-finite one): advances the schedule (``step_count``) and updates the state.
- ``state_dict()`` / ``load_state_dict()``: everything a resume needs (plain tensors, numbers
  and the sparsifier's own RNG state; loads with ``torch.load(weights_only=True)``), saved in
  the checkpoint beside the optimizer's, so a resumed run is bit-identical.

A sparsifier never changes the model when it is built (so building one before loading a
checkpoint is harmless); it changes weights only in ``step()``. Randomness comes from its own
``torch.Generator`` (seeded, saved), never from the global RNG streams of the run.

Subclasses (one per method, registered in :data:`SPARSIFIERS` under the strategy's
``sparsifier`` key) set ``provides`` (the state keys they maintain), take their schedule
parameters as keyword arguments with the paper's defaults, and implement ``init_state`` and
``update``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from fst.layers import sparse_layers
from fst.registry import Registry
from fst.strategies import Strategy

__all__ = [
    "Sparsifier",
    "SPARSIFIERS",
    "build_sparsifier",
    "restore_sparsifier",
    "schedule_params",
]

SPARSIFIERS: Registry[type] = Registry("sparsifier")
# Supplied by the engine, not by the sparsity config group.
ENGINE_ARGS = ("total_steps", "steps_per_epoch", "seed")


class Sparsifier:
    """Base class; see the module docstring.

    Args:
        model: the sparsified model (not DDP-wrapped); its sparse layers whose plan names this
            sparsifier (``plan.sparsifier == key``) get state.
        optimizer: the model's optimizer (schedules that reset optimizer state need it).
        total_steps / steps_per_epoch: optimizer steps of the whole run / of one epoch.
        seed: seeds the sparsifier's own generator.
    """

    key: ClassVar[str] = ""
    provides: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
    ):
        self.layers = {
            f"{name}.weight" if name else "weight": m
            for name, m in sparse_layers(model)
            if m.plan.sparsifier == self.key
        }
        if not self.layers:
            raise ValueError(
                f"sparsifier {self.key!r}: the model has no sparse layer whose strategy uses it "
                "(sparsify the model with that strategy first)"
            )
        self.optimizer = optimizer
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.step_count = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        self.state: dict[str, dict[str, Any]] = {}
        for name, m in self.layers.items():
            self.state[name] = {}
            m.rule_state = self.state[name]
        with torch.no_grad():
            self.init_state()

    # ------------------------------------------------------------------ subclass hooks
    def init_state(self) -> None:
        """Fill ``self.state`` for step 0 (must not change the model)."""

    def update(self) -> None:
        """Advance to ``self.step_count`` (called by :meth:`step`, under ``no_grad``)."""

    # ------------------------------------------------------------------ the optimizer-like API
    @torch.no_grad()
    def step(self) -> None:
        """Call once after each optimizer step that was taken."""
        self.step_count += 1
        self.update()

    def items(self) -> Iterator[tuple[str, nn.Module, dict[str, Any]]]:
        """``(parameter name, layer, state)`` for every layer this sparsifier holds."""
        for name, m in self.layers.items():
            yield name, m, self.state[name]

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "step_count": self.step_count,
            "generator": self.generator.get_state(),
            "state": {name: dict(s) for name, s in self.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` in place (the layers keep their references)."""
        if state.get("key") != self.key:
            raise ValueError(
                f"sparsifier state of {state.get('key')!r} cannot load into {self.key!r}"
            )
        saved = state["state"]
        if set(saved) != set(self.state):
            missing = sorted(set(self.state) - set(saved))[:3]
            extra = sorted(set(saved) - set(self.state))[:3]
            raise ValueError(
                f"sparsifier {self.key!r}: saved state does not fit the model's layers "
                f"(missing {missing}, unexpected {extra})"
            )
        self.step_count = int(state["step_count"])
        self.generator.set_state(state["generator"])
        for name, m in self.layers.items():
            dev = m.weight.device
            own = self.state[name]
            own.clear()
            for k, v in saved[name].items():
                own[k] = v.to(dev, copy=True) if torch.is_tensor(v) else v  # no aliasing

    # ------------------------------------------------------------------ helpers
    def epochs_done(self) -> float:
        """Optimizer steps done, in epochs."""
        return self.step_count / self._need("steps_per_epoch")

    def _need(self, what: str) -> int:
        value = getattr(self, what)
        if value is None:
            raise ValueError(
                f"sparsifier {self.key!r} needs {what} for its schedule (pass it when building "
                "it; train.py does)"
            )
        return int(value)

    def uniform(self) -> float:
        """One draw from U[0, 1) of the sparsifier's generator."""
        return float(torch.rand((), generator=self.generator))

    def zero_optimizer_state(self, param: torch.Tensor, keep: torch.Tensor) -> None:
        """Zero the optimizer's per-element state (momentum, Adam moments) where ``keep`` is
        False (RigL resets the accumulators of new connections)."""
        if self.optimizer is None:
            return
        for v in self.optimizer.state.get(param, {}).values():
            if torch.is_tensor(v) and v.shape == param.shape:
                v.mul_(keep)

    def __repr__(self) -> str:
        return f"<sparsifier {self.key!r}: {len(self.layers)} layers, step {self.step_count}>"


def schedule_params(key: str) -> set[str]:
    """The schedule parameters of sparsifier ``key`` (its keyword arguments the sparsity
    config group may set; :data:`ENGINE_ARGS` come from the engine)."""
    cls = SPARSIFIERS.get(key)
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in params
        if p.kind == p.KEYWORD_ONLY and p.name not in ENGINE_ARGS and not p.name.startswith("_")
    }


def build_sparsifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    strategy: Strategy | None = None,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
    seed: int = 0,
    **params,
) -> Sparsifier | None:
    """The sparsifier the model's strategy needs, or None for a stateless strategy.

    ``strategy``: the run's plan (default: read off the model's sparse layers).
    ``params``: its schedule parameters (``configs/sparsity/<strategy>.yaml``); a parameter
    the strategy's sparsifier does not take fails naming the ones it does.
    """
    model = getattr(model, "module", model)  # a DDP wrapper
    keys = {m.plan.sparsifier for _, m in sparse_layers(model)} - {""}
    if strategy is not None:  # the run's plan, handed down (layers must agree with it)
        if keys - {strategy.sparsifier}:
            raise ValueError(
                f"strategy {strategy.name!r} has sparsifier {strategy.sparsifier!r}, but the "
                f"model's layers use {sorted(keys)}"
            )
        keys = {strategy.sparsifier} - {""}
    if len(keys) > 1:
        raise ValueError(f"the model mixes strategies with different sparsifiers: {sorted(keys)}")
    if not keys:
        if params:
            raise ValueError(
                f"schedule parameter(s) {sorted(params)} given, but the model's strategy keeps "
                "no state across steps (it has no sparsifier)"
            )
        return None
    (key,) = keys
    plan = strategy or next(m.plan for _, m in sparse_layers(model) if m.plan.sparsifier == key)
    missing = {k for r in plan.rules for k in r.state_keys} - set(SPARSIFIERS.get(key).provides)
    if missing:
        raise ValueError(
            f"strategy {plan.name!r}: sparsifier {key!r} does not provide the state "
            f"{sorted(missing)} its rules read"
        )
    unknown = set(params) - schedule_params(key)
    if unknown:
        raise ValueError(
            f"sparsifier {key!r} takes no parameter(s) {sorted(unknown)}; its parameters: "
            f"{', '.join(sorted(schedule_params(key))) or 'none'}"
        )
    return SPARSIFIERS.get(key)(
        model,
        optimizer,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        **params,
    )


def register(cls):
    """Class decorator: add a :class:`Sparsifier` subclass to :data:`SPARSIFIERS` under its key."""
    SPARSIFIERS.register(cls.key, cls)
    return cls


def restore_sparsifier(model: nn.Module, saved: dict[str, Any] | None, source: str = ""):
    """Attach the per-layer state saved in a checkpoint (``state["sparsifier"]``) to a freshly
    built model, for evaluation or export (no schedule: nothing will be stepped). Returns the
    sparsifier, or None for a stateless strategy."""
    sparsifier = build_sparsifier(model)
    if sparsifier is None:
        return None
    if not saved:
        raise ValueError(
            f"checkpoint {source} has no sparsifier state, but the strategy keeps its masks in "
            f"sparsifier {sparsifier.key!r}: it was not written by train.py with this strategy"
        )
    sparsifier.load_state_dict(saved)
    return sparsifier
