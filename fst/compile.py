"""``torch.compile`` for sparse models (``trainer.compile: false | default | max-autotune``).

:func:`compile_model` compiles a model *in place* (``nn.Module.compile``) after
:func:`fst.sparsify`: the module object, its parameter names and its ``state_dict`` keys stay
those of the eager model (no ``_orig_mod.`` prefix), so checkpoints, resume, ``eval.py``,
DDP wrapping, :func:`fst.summary` and the mask diagnostics all see the same model, and a
checkpoint written by a compiled run loads into an eager one and back.

What torch 2.14's dynamo traces (checked by ``tests/test_compile.py`` with
``torch._dynamo.explain`` for every strategy x backend, on a ResNet-18 and a timm ViT;
stateful strategies with their sparsifier, stepped between compiled steps):

- the sparse layers' custom ``torch.autograd.Function`` (every backend's
  :class:`fst.ops.function.LayerFunction`), forward and ``once_differentiable`` backward,
  traced whole: its non-tensor arguments (the backend's kernels, the frozen
  :class:`fst.strategies.Strategy`, ``ConvGeometry``, the decay) are constants of the graph; a
  changed decay scale (a GradScaler's loss scale) recompiles once and is then a graph input;
- what used to break graphs, now restructured: ``Strategy.rules`` was a ``cached_property``
  (its lock cannot be traced on Python < 3.12), the IR half of an odd width wrote through
  ``out=`` into a strided view, and ``fst_released`` drew its X patterns with ``.tolist()``.

The masks of W and W^T, the IR half of dY and the Eq. 3 inputs are element-wise work that
inductor fuses around the convolutions: per sparse conv, one kernel computes both masked
weights (the masks trace as one rank reduction per entry, :func:`fst.masks._keep_ranked`),
one the IR half of dY, one the decay term with the weight gradient (checked with
``TORCH_LOGS=output_code`` on CPU). ``scripts/bench_step.py --compile`` reports their time.

``sparse24`` (:mod:`fst.ops.sparse24`; checked on CPU with its emulated GEMM,
``tests/test_compile_sparse24.py``): each 2:4 GEMM is one call of the custom op
``fst::sparse24_mm`` (compress + multiply at run time: the compressed operand has no fake
kernel in torch), so forward and backward trace whole once a layer's kernels are decided. They
are decided, by timing them on the real input, at a layer's first input of a new shape, grad
mode or autocast dtype, outside any graph (``torch.compiler.disable``). Under plain
``torch.compile`` that first call graph-breaks at each layer and dynamo caches the pieces
(later calls break no more, but run as those pieces, and a deep model's layers hit the
recompile limit and run eagerly); :func:`compile_model` avoids it with
:func:`eager_first_calls`: the first call of each input signature runs eagerly and the next
compiles the model as one graph.

One exception: a rule whose backward writes the layer's state (``resprop`` records the
gradient it reuses next step; :attr:`fst.rules.base.Rule.backward_writes_state`) is a side
effect dynamo refuses inside an autograd.Function's backward, so those layers are called through
``torch.compiler.disable`` (:mod:`fst.layers`): eager inside the compiled model, a graph break
at each, the same results.

Random draws (``fst_released``'s X patterns, :meth:`fst.rules.base.Rule.draws_random`): inductor
replaces random ops by its own generator unless ``fallback_random`` is set. For models whose
rules draw, :func:`compile_model` sets it, so a compiled run draws exactly the patterns the
eager run draws from the global generator (which the run seeds and exact resume restores).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch._inductor import list_mode_options

from fst.layers import sparse_layers

MODES = ("default", "max-autotune")


def compile_mode(value: Any) -> str | None:
    """The ``trainer.compile`` value as a torch.compile mode, or None for eager.

    Accepts ``false``/``null`` (eager), ``"default"`` and ``"max-autotune"``; anything else
    raises ``ValueError`` naming the valid values.
    """
    if value is None or value is False or (isinstance(value, str) and value.lower() == "false"):
        return None
    if isinstance(value, str) and value in MODES:
        return value
    raise ValueError(
        f"trainer.compile={value!r}; valid values: false (eager), "
        + ", ".join(MODES)
        + " (torch.compile modes, e.g. trainer.compile=default)"
    )


def draws_random(model: nn.Module) -> bool:
    """Does any sparse layer's plan draw random numbers (:meth:`Rule.draws_random`)?"""
    return any(r.draws_random(m.plan) for _, m in sparse_layers(model) for r in m.plan.rules)


def compile_options(model: nn.Module, mode: str) -> dict[str, Any]:
    """Inductor options of ``mode``, plus ``fallback_random`` when the model draws."""
    options = dict(list_mode_options(mode))
    if draws_random(model):
        options["fallback_random"] = True
    return options


def compile_model(model: nn.Module, mode: Any) -> nn.Module:
    """Compile ``model`` in place for ``mode`` (see :func:`compile_mode`); returns it.

    A no-op for eager. Call it after :func:`fst.sparsify` and after moving the model to its
    device, before wrapping it in DDP.
    """
    mode = compile_mode(mode)
    if mode is None:
        return model
    options = compile_options(model, mode)
    if options:
        model.compile(options=options)
    else:
        model.compile(mode=mode)
    if decides_per_input(model):
        eager_first_calls(model)
    return model


def decides_per_input(model: nn.Module) -> bool:
    """Does any sparse layer's backend pick kernels on its inputs (``sparse24``)?"""
    return any(m.backend_impl.decides_per_input for _, m in sparse_layers(model))


def eager_first_calls(model: nn.Module) -> nn.Module:
    """Run the first call of each new input signature of in-place compiled ``model`` eagerly.

    The signature: each tensor argument's shape, dtype, device, ``requires_grad`` and layout,
    the grad mode and the autocast state, which together fix every layer's input. Later calls
    with a signature seen run compiled. ``sparse24`` decides each layer's kernels on its first
    input of a new shape, so in this eager call its layers time and check their kernels outside
    any graph, and the compiled call after it traces the model as one graph.
    """
    compiled = getattr(model, "_compiled_call_impl", None)
    if compiled is None:
        raise ValueError("eager_first_calls: compile the model in place first (model.compile())")
    if not isinstance(compiled, _EagerFirstCalls):
        model._compiled_call_impl = _EagerFirstCalls(compiled)
    return model


class _EagerFirstCalls:
    def __init__(self, fn):
        self.fn = fn
        self.seen: set = set()

    def __call__(self, *args, **kwargs):
        sig = _signature(args, kwargs)
        if sig in self.seen:
            return self.fn(*args, **kwargs)
        with torch.compiler.set_stance("force_eager"):
            out = self.fn(*args, **kwargs)
        self.seen.add(sig)
        return out


def _signature(args, kwargs) -> tuple:
    def of(v):
        if isinstance(v, torch.Tensor):
            cl = v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last)
            return (tuple(v.shape), v.dtype, v.device, v.requires_grad, v.is_contiguous(), cl)
        if isinstance(v, (list, tuple)):
            return tuple(of(a) for a in v)
        if isinstance(v, dict):
            return tuple((k, of(a)) for k, a in v.items())
        return v if isinstance(v, (bool, int, float, str, type(None))) else type(v).__name__

    amp = tuple(
        (d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda")
    )
    return of(args), of(kwargs), torch.is_grad_enabled(), amp


def is_compiled(model: nn.Module) -> bool:
    """True if ``model`` (or the module inside a DDP wrapper) was compiled in place."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_compiled_call_impl", None) is not None or isinstance(
        model, torch._dynamo.eval_frame.OptimizedModule
    )
