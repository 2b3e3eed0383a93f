"""Sparse drop-in layers: ``nn.Conv2d`` / ``nn.Linear`` whose three GEMMs follow a strategy.

They are the same classes with another ``forward``: parameters keep their names (``weight``,
``bias``), so dense and sparse state_dicts load into each other, and :func:`fst.sparsify`
converts a model by switching the class of each module in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from fst.ops import BACKENDS, Backend, ConvGeometry
from fst.rules import with_state
from fst.strategies import Strategy
from fst.tokens import TokenLayout


class _SparseMixin:
    """Holds the plan (``.plan``), its key (``.strategy``), the backend (``.backend_impl``, the
    :class:`fst.ops.Backend` that runs the layer; ``.backend``, its key) and the SR-STE decay.

    ``rule_state``: the layer's per-layer state for plans whose rules keep some across steps
    (a dict owned by the plan's :class:`fst.sparsifier.Sparsifier`, which sets it); None for
    stateless plans, whose backends are then called exactly as before.
    """

    plan: Strategy
    strategy: str
    backend: str
    backend_impl: Backend
    decay: float
    rule_state: dict | None = None
    # Multiplies ``decay`` in backward: the decay term is added to the gradient in every
    # backward pass, so a loop that accumulates k micro-batches or scales the loss (fp16
    # GradScaler, scale s) sets s / k here to keep Eq. 6's decay per optimizer step.
    decay_scale: float = 1.0

    def configure(self, plan: Strategy, backend: str | Backend, decay: float) -> None:
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.plan = plan
        self.strategy = plan.name
        self.backend_impl = backend if isinstance(backend, Backend) else BACKENDS.get(backend)
        self.backend = self.backend_impl.name
        self.decay = float(decay)
        self.rule_state = None  # a new plan's sparsifier attaches its state

    @property
    def _backend(self) -> Backend:  # the older name of backend_impl
        return self.backend_impl

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, strategy={self.strategy}, backend={self.backend}"


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


# A plan whose rules write layer state in backward (Rule.backward_writes_state) runs its layers
# eagerly under torch.compile: dynamo cannot trace that side effect (a graph break per layer).
_eager_call = torch.compiler.disable(_call)


class SparseConv2d(_SparseMixin, nn.Conv2d):
    """``nn.Conv2d`` (groups=1, zero padding) running ``plan``'s Eq. 1-3 on ``backend``."""

    def configure(self, plan, backend, decay):
        super().configure(plan, backend, decay)
        self.geom = ConvGeometry.of(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input_shape = tuple(x.shape)  # for summary(): output width of F(X^T)
        decay = self.decay * self.decay_scale
        kw = with_state(self.rule_state)
        call = _call if self.plan.traceable else _eager_call
        fn = self.backend_impl.conv2d
        return call(fn, x, self.weight, self.bias, self.geom, self.plan, decay, **kw)


class SparseLinear(_SparseMixin, nn.Linear):
    """``nn.Linear`` running ``plan``'s Eq. 1-3 on ``backend`` (tokens: dim -2 of the input).

    ``token_layout`` (:class:`fst.tokens.TokenLayout`, set by :func:`fst.sparsify` on a vision
    transformer's blocks): prefix tokens and the patch grid on the token axis, for Eq. 3.
    """

    token_layout: TokenLayout | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input_shape = tuple(x.shape)  # for summary(): 2-D inputs keep Eq. 3 dense
        decay = self.decay * self.decay_scale
        kw = with_state(self.rule_state)
        tokens = self.token_layout
        if tokens is not None:
            tokens.check(self.last_input_shape)
            kw["tokens"] = tokens
        call = _call if self.plan.traceable else _eager_call
        return call(self.backend_impl.linear, x, self.weight, self.bias, self.plan, decay, **kw)


SPARSE_CLASSES = {nn.Conv2d: SparseConv2d, nn.Linear: SparseLinear}
DENSE_CLASSES = {v: k for k, v in SPARSE_CLASSES.items()}


def set_decay_scale(model: nn.Module, scale: float) -> None:
    """Set ``decay_scale`` of every sparse layer (see :class:`_SparseMixin`)."""
    for _, m in sparse_layers(model):
        m.decay_scale = float(scale)


def sparse_layers(model: nn.Module) -> Iterator[tuple[str, _SparseMixin]]:
    """Yield ``(name, module)`` for every sparse layer of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, _SparseMixin):
            yield name, m
