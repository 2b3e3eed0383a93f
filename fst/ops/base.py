"""What every backend shares: the registry and its builder, conv geometry, autocast casting,
the eager CPU thread scope, the SR-STE decay.

What each GEMM prunes is not decided here but by the plan's rules (:mod:`fst.rules`).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch

from fst.registry import Registry
from fst.strategies import Strategy
from fst.threads import work_threads


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding and dilation of a groups=1 Conv2d, as (h, w) pairs."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, conv: torch.nn.Conv2d) -> ConvGeometry:
        pad = conv.padding
        if isinstance(pad, str):
            if pad != "valid":
                raise ValueError(f"padding={pad!r} is not supported by sparse convs")
            pad = (0, 0)
        return cls(tuple(conv.stride), tuple(pad), tuple(conv.dilation))

    def out_hw(self, h: int, w: int, k) -> tuple[int, int]:
        """(Ho, Wo) of an (h, w) input under a ``k`` = (kh, kw) kernel."""
        s, p, d = self.stride, self.padding, self.dilation
        ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        return ho, (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1


class Backend:
    """Executes the three GEMMs of a plan. Subclasses implement :meth:`conv2d` and :meth:`linear`.

    ``needs_cuda``: the backend only runs on CUDA devices (used by config validation).
    ``decides_per_input``: the backend picks its kernels by running them on each layer's first
    input of a new shape (``sparse24``); :func:`fst.compile.compile_model` then runs the first
    call of each new input signature eagerly.
    ``state``: the layer's per-layer state, given only for plans that keep some (a dict the
    backend hands to the plan's rule hooks as ``**with_state(state)`` without reading it;
    see :mod:`fst.rules.base`, "Per-layer state").
    Settings (``configs/backend/<key>.yaml``'s keys): the keyword-only arguments of
    ``__init__``, each default written there once (:func:`build_backend`).
    """

    name = "base"
    needs_cuda = False
    decides_per_input = False

    def conv2d(self, x, weight, bias, geom: ConvGeometry, plan: Strategy, decay: float, state=None):
        raise NotImplementedError

    def linear(self, x, weight, bias, plan: Strategy, decay: float, state=None, tokens=None):
        """``state``: the layer's per-layer rule state (stateful plans only). ``tokens``: the
        :class:`fst.tokens.TokenLayout` of ``x``'s dim -2 (None: one flat row), which Eq. 3
        follows (:meth:`fst.rules.weight_grad.WeightGradRule.token_operands`).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<backend {self.name}>"

    def __deepcopy__(self, memo):
        # one shared instance per key and settings: a copied model's layers use the same
        # backend (its settings, caches and ``emulate()`` context), not a private copy of it
        return self


#: ``BACKENDS[key]``: the backend with its default settings, shared by every layer using it.
BACKENDS: Registry[Backend] = Registry("backend")
_BUILT: dict[tuple, Backend] = {}


def settings_of(cls: type[Backend]) -> dict:
    """A backend class's settings and their defaults: its keyword-only ``__init__`` arguments."""
    params = inspect.signature(cls).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def build_backend(name: str, **kwargs) -> Backend:
    """The backend ``name`` with the settings ``kwargs`` (``configs/backend/<name>.yaml``'s keys
    but ``name``), one shared instance per settings: the defaults give ``BACKENDS[name]``.

    An unknown setting raises ``TypeError`` naming the valid ones; a bad value, the backend's
    ``ValueError``.
    """
    shared = BACKENDS.get(name)
    defaults = settings_of(type(shared))
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) or "none"
        raise TypeError(f"backend {name!r} has no setting(s) {unknown}; valid: {valid}")
    settings = {**defaults, **kwargs}
    if settings == defaults:
        return shared
    key = (name, tuple(sorted(settings.items())))
    if key not in _BUILT:
        _BUILT[key] = type(shared)(**kwargs)
    return _BUILT[key]


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype in force for ``x``'s device, or None."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def cast(dtype: torch.dtype | None, *tensors):
    """Cast floating tensors to ``dtype`` (no-op for None); None entries pass through."""
    if dtype is None:
        return tensors
    return tuple(t if t is None else t.to(dtype) for t in tensors)


def elementwise(t: torch.Tensor):
    """Eager CPU element-wise work over ``t`` runs on as few threads as its size merits
    (:func:`fst.threads.work_threads`: each small op would pay a thread barrier, which costs
    milliseconds while another process holds a core); compiled or on a GPU: no change."""
    if torch.compiler.is_compiling() or t.device.type != "cpu":
        return contextlib.nullcontext()
    return work_threads(t.numel())


def add_decay(grad_w: torch.Tensor, weight: torch.Tensor, w_fwd: torch.Tensor, plan, decay):
    """SR-STE (Eq. 6): ``grad += decay * (W - S(W))`` with the forward-pruned weight."""
    if decay and plan.uses_decay:
        # sub_ of (S(W) - W), not add_ of (W - S(W)): torch.compile (inductor, torch 2.14)
        # rewrites `mm(...) + alpha * t` (a Linear's dW plus this term) into an addmm that
        # silently drops alpha (the add+mm -> addmm pattern of
        # torch/_inductor/fx_passes/post_grad.py; pytorch/pytorch#167313 is the reverse
        # rewrite's twin bug). tests/test_compile.py checks a sparse Linear's decay compiled.
        grad_w = grad_w.sub_(w_fwd - weight.detach(), alpha=decay)
    return grad_w
