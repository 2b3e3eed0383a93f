"""What a GEMM rule is, the three rule registries, and the questions everyone asks of a plan.

A layer's training step runs three GEMMs (paper Sec. 3; conv: ``W`` is (Co, K = Ci*kh*kw),
``X`` the im2col matrix (K, positions), ``dY`` (Co, positions)):

- Eq. 1, forward:          ``Y  = W X``      reduces over K;
- Eq. 2, input gradient:   ``dX = W^T dY``   reduces over Co;
- Eq. 3, weight gradient:  ``dW = dY X^T``   reduces over positions (N*H*W, or tokens).

A *rule* says what one of these GEMMs prunes: which operand, along which dimension, how, and
therefore whether a sparse tensor core can run it at half the MACs (its operand is 2:4 along
the GEMM's reduction dimension). A :class:`fst.strategies.Strategy` holds one rule per GEMM;
backends, :func:`fst.summary`, ``eval.py``, the diagnostics and the analyses all ask the rule
objects here instead of re-deriving what a plan's modes mean.

A rule is a frozen dataclass whose fields are its *options* (the fixed mask's ``ir_coef``, the
``nm`` mask's ``mask_layout``, ...): every subclass of :class:`Rule` is made one, so an
annotated class attribute declared with :func:`option` is an option (with its documentation,
default and check), a plain class attribute a fact of the rule. The registries hold one default
instance per key; a strategy holds the instances it uses (``Fixed(ir_coef=1.0)``), so the hooks
read their options from ``self``. The ``plan`` they receive is the whole strategy, for rules that
depend on another GEMM's rule (Eq. 2's ``fwd`` transposes Eq. 1's weight).

Each rule's arithmetic is written once, in the im2col domain, and *is* the test oracle's
semantics: the ``reference`` backend calls nothing else, and faster backends either call the
same methods or are tested against them.

Adding a GEMM mode: one rule class in the module of its equation (``forward.py``,
``input_grad.py``, ``weight_grad.py``) or of its method (``released.py``, ``meprop.py``,
``resprop.py``), registered under its key, plus its test (see docs/strategies.md, "Adding a
strategy or a GEMM mode").

Per-layer state (masks and gradients that live across steps). A rule that reads or writes
state a layer keeps between steps (the mask a sparsifier holds for DPF, RigL, ASP; the previous
step's gradient for ReSprop) lists those keys in ``state_keys``. Each sparse layer of such a
plan holds one plain ``dict`` of tensors and Python numbers, owned and checkpointed by the
plan's sparsifier (:mod:`fst.sparsifier`); backends hand it to the rule hooks as the keyword
``state``. Layers of stateless plans have no state and their rules are called exactly as
before (no ``state`` keyword), so stateless rules need not accept one and cost nothing extra.
Backends never look inside the mapping: only rules and sparsifiers know its keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar

import torch

from fst.masks import apply_mask, is_nm
from fst.registry import Registry

# The plan the hooks receive: a fst.strategies.Strategy (not imported: strategies are built
# from rules, so rules know them only by this name).
Plan = Any


def option(default: Any, doc: str, *, choices: tuple = (), check: Callable | None = None):
    """Declare a rule's option: ``ir_coef: float = option(0.0, "coefficient ...")``.

    ``doc`` is listed in :data:`fst.strategies.OPTIONS` (and so in the error that lists the
    valid options); ``choices``: the valid values; ``check(value) -> str``: the error message
    for an invalid value (``""`` when valid). Checked whenever a rule is built.
    """
    return field(default=default, metadata={"doc": doc, "choices": choices, "check": check})


def check_option(f: Field, value: Any) -> None:
    """Raise ValueError if ``value`` is not valid for the option declared by field ``f``."""
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{f.name}={value!r}; valid: {choices}")
    check = f.metadata.get("check")
    why = check(value) if check else ""
    if why:
        raise ValueError(why)


@dataclass(frozen=True, repr=False)
class Rule:
    """One GEMM's rule. Subclasses set the class attributes, declare their options with
    :func:`option` and override the hooks.

    Attributes:
        key: registry key (the value of ``Strategy.forward`` / ``input_grad`` / ``weight_grad``).
        eq: 1, 2 or 3.
        operand: the pruned operand as written in the paper (``"W"``, ``"W^T"``, ``"dY"``,
            ``"X^T"``), or ``""`` when the GEMM is dense.
        state_keys: keys of the layer's per-layer state this rule reads or writes (see the
            module docstring); a plan with such a rule must name a sparsifier providing them.

    Every subclass is made a frozen, keyword-only dataclass: its options are its fields
    (``Fixed(ir_coef=1.0)``; change one with ``dataclasses.replace``), instances compare and
    hash by class and options (strategies are constants of traced autograd Functions).
    """

    key: ClassVar[str] = ""
    eq: ClassVar[int] = 0
    operand: ClassVar[str] = ""
    state_keys: ClassVar[tuple[str, ...]] = ()
    # Its backward hook writes the layer's state (ReSprop records the gradient it reuses next
    # step). Dynamo refuses such a side effect inside an autograd.Function's backward, so under
    # torch.compile the layers of a plan with such a rule run eagerly (fst.layers; a graph
    # break per layer, results unchanged).
    backward_writes_state: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        # Every rule class a dataclass without its own decorator: a new GEMM mode is a class
        # with @register and its annotated options, nothing more. Keyword-only: the options of
        # a subclass follow its bases' (prefix_tokens), so positions would be a trap.
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True, repr=False, kw_only=True)(cls)

    def __post_init__(self):
        for f in fields(self):
            check_option(f, getattr(self, f.name))

    @property
    def options(self) -> tuple[str, ...]:
        """The options this rule reads (its fields; an option no rule of a plan reads is
        refused when given)."""
        return tuple(f.name for f in fields(self))

    @property
    def prunes(self) -> bool:
        return bool(self.operand)

    def pattern(self, plan: Plan) -> str:
        """How the pruned operand's zeros are arranged, for reports (``"2:4"``,
        ``"unstructured"``, ``"filters"``, ...)."""
        return "2:4"

    def skips(self, plan: Plan, weight_shape: tuple[int, ...]) -> str:
        """Why this rule leaves a layer with this weight shape unpruned, or ``""`` if it
        prunes it (ASP's shape rule; asked by the MAC count, the summary, the sparsifier)."""
        return ""

    def formula(self, plan: Plan) -> str:
        """The GEMM as written in the strategy table of docs/strategies.md, e.g. ``"S(W^T) dY"``."""
        raise NotImplementedError

    def tensor_core(self, plan: Plan) -> bool:
        """Is the pruned operand 2:4 along this GEMM's reduction dimension by construction?

        True means a sparse tensor core runs the GEMM at half the MACs (Figure 2's count);
        a pruned operand that is not (``S(W)^T`` along Co, the release's regrouped weight,
        a data-dependent width) counts as dense.
        """
        return False

    def kept_half(self, plan: Plan) -> float | None:
        """An Eq. 3 rule's fast path, offered to backends: ``c`` when Eq. 3 equals the dense
        weight gradient over the even width positions alone with ``dY' = dY_even + c * dY_odd``
        (zero past a row's end), else None (no such path: backends run the rule's operands)."""
        return None

    def draws_random(self, plan: Plan) -> bool:
        """Does this rule draw from the global RNG? (``fst.compile`` keeps such draws eager's.)"""
        return False

    def __repr__(self) -> str:
        opts = "".join(f" {o}={getattr(self, o)!r}" for o in self.options)
        return f"<Eq. {self.eq} rule {self.key!r}{opts}>"


FORWARD_RULES: Registry[Rule] = Registry("Eq. 1 (forward) rule")
INPUT_GRAD_RULES: Registry[Rule] = Registry("Eq. 2 (input gradient) rule")
WEIGHT_GRAD_RULES: Registry[Rule] = Registry("Eq. 3 (weight gradient) rule")
REGISTRIES = {1: FORWARD_RULES, 2: INPUT_GRAD_RULES, 3: WEIGHT_GRAD_RULES}


def register(cls):
    """Class decorator: instantiate the rule with its default options and add it to its
    equation's registry."""
    REGISTRIES[cls.eq].register(cls.key, cls())
    return cls


def with_state(state) -> dict:
    """The keyword arguments that hand a layer's per-layer ``state`` to rule hooks: ``{}``
    for layers of stateless plans (their rules are called as before), else ``{"state": ...}``."""
    return {} if state is None else {"state": state}


def weight_operands(
    weight: torch.Tensor, plan: Plan, need_bwd: bool = True, state=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights of Eq. 1 and Eq. 2, both shaped like ``weight``, computed once per forward.

    Returns ``(w_fwd, w_bwd)``: ``w_fwd`` = W, S(W) or T(W) (the Eq. 1 rule); ``w_bwd`` = the
    matrix whose transpose multiplies dY in Eq. 2 (the Eq. 2 rule). ``w_bwd`` is None when
    ``need_bwd`` is False (no input gradient will be asked for). Detached. ``state``: the
    layer's per-layer state (None for stateless plans), for rules that hold their mask there.
    """
    w = weight.detach()
    eq1, eq2 = plan.rules[0], plan.rules[1]
    kw = with_state(state)
    # |W| is shared when both masks rank magnitudes of the same dense W (fst: S(W), S(W^T)).
    a = w.abs() if (eq1.uses_abs and eq2.uses_abs) else None
    mask = eq1.mask(w, plan, a, **kw)
    w_fwd = w if mask is None else apply_mask(w, mask)
    if not need_bwd:
        return w_fwd, None
    return w_fwd, eq2.weight(w, w_fwd, plan, a, **kw)


@dataclass
class OperandCheck:
    """A pruned weight operand of one GEMM, viewed along that GEMM's reduction dimension.

    ``tensor`` viewed so that 2:4 groups run along ``dim``; ``along`` names that dimension
    (``Ci*kh*kw``, ``Ci``, ``in``, ``Co``, ``out``); ``tensor_core``: the rule promises 2:4
    (a failure is then a bug or a tampered weight), otherwise the check only reports;
    ``pattern``: how the rule arranges the zeros (:meth:`Rule.pattern`).
    """

    eq: int
    operand: str
    along: str
    tensor: torch.Tensor
    dim: int
    tensor_core: bool
    pattern: str = "2:4"

    def ok(self) -> bool:
        return is_nm(self.tensor, self.dim)

    def valid_share(self) -> float:
        """Share of groups of 4 along ``dim`` with at most 2 nonzeros (1.0 when 2:4)."""
        x = self.tensor.movedim(self.dim, -1)
        pad = (-x.shape[-1]) % 4
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        nz = (x.reshape(*x.shape[:-1], -1, 4) != 0).sum(-1)
        return float((nz <= 2).float().mean())

    def zero_share(self) -> float:
        """Share of the operand's entries that are zero."""
        return float((self.tensor == 0).float().mean()) if self.tensor.numel() else 0.0

    def label(self) -> str:
        if self.tensor_core:
            return f"2:4 along {self.along}: {'ok' if self.ok() else 'NOT 2:4'}"
        # Sparse, but not 2:4 along the reduction dim by construction: no sparse tensor core.
        nm = "2:4" if self.ok() else "NOT 2:4"
        return f"{self.pattern}, {self.zero_share():.0%} zero: {nm} along {self.along}"


def operand_checks(
    plan: Plan, w_fwd: torch.Tensor, w_bwd: torch.Tensor | None, state=None
) -> list[OperandCheck]:
    """The pruned weight operands of Eq. 1 and Eq. 2, each along its GEMM's reduction dim.

    Shared by :func:`fst.summary`, ``eval.py`` and the per-layer diagnostics. An Eq. 1 rule
    whose mask is not set yet (``pruning_now`` false: ASP's dense phase) is not checked.
    """
    out = []
    eq1, eq2 = plan.rules[0], plan.rules[1]
    if eq1.prunes and eq1.pruning_now(state):
        t, dim, along = eq1.reduction_view(w_fwd, plan)
        tc = eq1.tensor_core(plan)
        out.append(OperandCheck(1, eq1.operand, along, t, dim, tc, eq1.pattern(plan)))
    # The forward weight reused by Eq. 2 (chain rule) is not pruned while Eq. 1 is not.
    eq2_live = w_bwd is not w_fwd or eq1.pruning_now(state)
    if eq2.prunes_weight and w_bwd is not None and eq2_live:
        t = w_bwd.reshape(w_bwd.shape[0], -1)
        along = "Co" if w_bwd.dim() == 4 else "out"
        tc = eq2.tensor_core(plan)
        out.append(OperandCheck(2, eq2.operand, along, t, 0, tc, eq2.pattern(plan)))
    return out
