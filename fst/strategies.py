"""Pruning strategies: what each of a layer's three GEMMs prunes.

For a convolution with weight ``W`` (Co, Ci, kh, kw) seen as the matrix (Co, Ci*kh*kw) and
``X`` its im2col matrix (Ci*kh*kw rows, one column per output position):

=============  ==================  ====================  ===============================
key            Eq. 1 forward       Eq. 2 input gradient  Eq. 3 weight gradient
=============  ==================  ====================  ===============================
``dense``      W X                 W^T dY                dY X^T
``srste``      S(W) X              S(W)^T dY             dY X^T
``tsm``        T(W) X              T(W)^T dY             dY X^T
``fst2``       S(W) X              S(W^T) dY             dY X^T
``fst_noir``   S(W) X              S(W^T) dY             dY F(X^T)
``fst``        S(W) X              S(W^T) dY             (dY + shift(dY)) F(X^T)  (IR)
``wg``         S(W) X              S(W^T) dY             S(dY) X^T
``wx``         S(W) X              S(W^T) dY             dY S(X^T)
``gg``         S(W) X              W^T S(dY)             S(dY) X^T
``gx``         S(W) X              W^T S(dY)             dY S(X^T)
``mvue``       T(W) X              T(W)^T dY             MVUE(dY) X^T
=============  ==================  ====================  ===============================

Table 3's other baselines, each as its own paper describes it (their rule and sparsifier
modules cite the sources and list every choice):

=============  ==================  ====================  ===============================
key            Eq. 1 forward       Eq. 2 input gradient  Eq. 3 weight gradient
=============  ==================  ====================  ===============================
``meprop``     W X                 W^T topk(dY)          topk(dY) X^T
``resprop``    W X                 W^T R(dY)             R(dY) X^T
``dpf``        M(W) X              M(W)^T dY             dY X^T  (applied to the dense W)
``rigl``       M(W) X              M(W)^T dY             dY X^T  (pruned W kept at zero)
``asfp``       SFP(W) X            W^T dY                dY X^T
``asp``        S_fix(W) X          S_fix(W)^T dY         dY X^T
=============  ==================  ====================  ===============================

- ``topk(dY)`` (meProp, Sun et al. 2017): the largest-magnitude half of each example's dY.
- ``R(dY) = P + topk(dY - P)`` (ReSprop, Goli & Aamodt 2020): P is one example's dY of the
  previous step, the top half of the difference is kept.
- ``M(W)``: an unstructured mask held by the strategy's sparsifier: DPF's (Lin et al. 2020)
  magnitude mask recomputed every 16 steps on a gradual schedule, the dense W trained with
  the pruned model's gradient; RigL's (Evci et al. 2020) drop-by-magnitude /
  grow-by-gradient mask.
- ``SFP(W)``: ASFP (He et al. 2019) zeroes the lowest-L2 30% of filters of W at every epoch
  end (asymptotically rising rate) and keeps training them.
- ``S_fix(W)``: ASP (Mishra et al. 2021): dense training, a one-shot 2:4 magnitude prune
  (along Ci, ``mask_layout="cin"``, as NVIDIA's ASP), then training with that fixed mask.

None of these operands but ASP's is 2:4 along its GEMM's reduction dimension, so Figure 2's
MAC count treats their GEMMs as dense (``fst.summary`` says so per layer).

Group directions (always the reduction dimension of the GEMM the pruned operand feeds):

- ``S(W)``: 4 consecutive entries of the flattened (Ci, kh, kw) of each output channel
  (PyTorch's im2col order), zero-padded when Ci*kh*kw % 4 != 0 (``mask_layout="im2col"``,
  the paper); or 4 consecutive input channels at each kernel position (``mask_layout="cin"``,
  SR-STE's release and what channels-last sparse tensor cores need).
- ``S(W)^T`` (``srste``): the chain rule of SR-STE's forward ``Y = S(W) X`` (its released
  code convolves with the pruned weight in both directions); sparse, but its groups run along
  K, not Co, so it is not 2:4 along Eq. 2's reduction dimension and gains nothing on sparse
  tensor cores.
- ``S(W^T)``: 4 consecutive output channels for each (ci, kh, kw), computed from the dense W
  (``wt_source="dense"``, the paper). ``wt_source="pruned"`` is the released code instead:
  S(W) pruned again in fours regrouped inside one filter (see :mod:`fst.rules.released`).
- ``T(W)``: exact transposable mask of W as (Co, Ci*kh*kw); serves Eq. 1 and Eq. 2.
- ``S(dY)`` in Eq. 2: 4 consecutive output channels. ``S(dY)`` in Eq. 3 and ``S(X^T)``: 4
  consecutive output positions of the flattened H*W of each sample, zero-padded.
- ``F(X^T)``: keep output positions with even width index (0-based). Information
  Restoration adds ``ir_coef * dY(h, w+1)`` onto ``dY(h, w)`` for every even ``w`` that has a
  right neighbour (Eq. 10; ``ir_coef`` 1.0 in the paper, 0 = no IR). ``x_pattern="random4"``
  replaces F and the shift by the released code's (:mod:`fst.rules.released`).

- ``MVUE(dY)`` (``mvue``): 2 of every 4 consecutive output positions sampled with
  probabilities from their magnitudes and rescaled so that the estimate is unbiased
  (Chmiel et al., ICLR 2023; with T(W) in Eq. 1 and 2 it is the recipe of Hu et al., ICML 2024;
  see :mod:`fst.rules.mvue`). Option ``estimator``: ``"approx"`` (default, Hu et al.'s
  kernel) or ``"exact"`` (the minimum-variance 2:4 estimator).

``fst_released`` is the authors' released code: ``ir_coef=0.03``, ``x_pattern="random4"``,
``wt_source="pruned"``, the first convolution's weight dense (its X still masked) and every
Linear layer dense.

For ``nn.Linear`` (W: out x in, input [..., tokens, in]) S(W) runs along ``in``, S(W^T)
along ``out``, and the "width" axis of Eq. 3 is the token axis (dim -2) of inputs with 3 or
more dims. For 2-D inputs [batch, in] there is no spatial axis, so Eq. 3 masks are not
applied (dense dW). Inside a vision transformer (a :class:`fst.tokens.TokenLayout` on the
layer) the patch tokens form the rows of the patch grid and the class / register /
distillation tokens before them stay dense in Eq. 3 (option ``prefix_tokens="include"``: they
form one more row, pruned by the Eq. 3 rule).

SR-STE decay (Eq. 6): every strategy that prunes W in Eq. 1 adds ``decay * (W - S(W))`` to
``weight.grad`` with the forward-pruned weight (``T(W)`` for ``tsm``); Table 3's other
baselines do not (``sr_ste_decay=False``: it is no part of their methods).

A strategy is a name, one GEMM rule object of :mod:`fst.rules` per equation (``forward`` ->
``FORWARD_RULES``, ``input_grad`` -> ``INPUT_GRAD_RULES``, ``weight_grad`` ->
``WEIGHT_GRAD_RULES``) and the method's facts that are no GEMM's option (``sparsifier``,
``dense_linear``, ``dense_first_conv_weight``, ``sr_ste_decay``). The rules hold the
arithmetic, their 2:4 checks and MAC shares, and their options (the fixed mask's ``ir_coef``,
the ``nm`` mask's ``mask_layout``, ...): an option given to a strategy
(``fst.sparsify(..., ir_coef=0.03)``, ``sparsity.ir_coef=0.03``) goes to the rules of the plan
that declare it. A strategy whose rules keep per-layer state across steps names the sparsifier
that holds it (``sparsifier``, a key of :data:`fst.sparsifier.SPARSIFIERS`: its schedule). A
strategy is one registry entry here plus ``configs/sparsity/<key>.yaml`` (which also lists its
sparsifier's schedule parameters).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, fields, replace

from fst.registry import Registry
from fst.rules import REGISTRIES, Rule, check_option

__all__ = ["Strategy", "STRATEGIES", "get_strategy", "OPTIONS"]

_GEMMS = ("forward", "input_grad", "weight_grad")  # the fields naming the rules of Eq. 1, 2, 3

# Options that choose between two rules of one GEMM: option -> (GEMM, {value: rule key}, doc).
# The first value is the default (the paper's rule).
_RULE_SWITCHES = {
    "x_pattern": (
        "weight_grad",
        {"fixed": "fixed", "random4": "random4"},
        "'fixed' (paper: F keeps even width index, IR adds the right neighbour) or 'random4' "
        "(release: one of four patterns per im2col chunk, IR = roll over flat H*W)",
    ),
    "wt_source": (
        "input_grad",
        {"dense": "nm_wt", "pruned": "regrouped"},
        "'dense' (paper: S(W^T) along Co from W) or 'pruned' (release: S(W) pruned again in "
        "4x4-regrouped fours inside one filter; not 2:4 along Co)",
    ),
}


def _declared() -> dict[str, list[Field]]:
    """Every option a registered rule declares: name -> its dataclass fields."""
    out: dict[str, list[Field]] = {}
    for registry in REGISTRIES.values():
        for _, rule in registry.items():
            for f in fields(rule):
                out.setdefault(f.name, []).append(f)
    return out


class _Options(Mapping):
    """``{option: documentation}``, read-only: the rule switches and every option a registered
    rule declares, documented where it is declared (live: a rule registered later adds its
    own). An option declared by several rules lists each one's text."""

    def _table(self) -> dict[str, str]:
        table = {k: doc for k, (_, _, doc) in _RULE_SWITCHES.items()}
        for name, fs in _declared().items():
            table[name] = "; ".join(dict.fromkeys(f.metadata.get("doc", "") for f in fs))
        return table

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


OPTIONS: Mapping[str, str] = _Options()


def _default(name: str):
    """An option's value in a plan none of whose rules declares it."""
    if name in _RULE_SWITCHES:
        return next(iter(_RULE_SWITCHES[name][1]))
    return _declared()[name][0].default


def _option_alias(name: str) -> property:
    return property(lambda self: self.option(name), doc=f"Alias of ``option({name!r})``.")


def _rule(plan: str, gemm: str, rule: str | Rule) -> Rule:
    """The rule object of ``gemm`` (a registry key or a rule object) for strategy ``plan``."""
    eq = _GEMMS.index(gemm) + 1
    if isinstance(rule, Rule):
        if rule.eq != eq:
            raise ValueError(f"strategy {plan!r}: {gemm}={rule!r} is not an Eq. {eq} rule")
        return rule
    if rule not in REGISTRIES[eq]:
        raise ValueError(f"strategy {plan!r}: {gemm}={rule!r}; valid: " + ", ".join(REGISTRIES[eq]))
    return REGISTRIES[eq].get(rule)


@dataclass(frozen=True, init=False)
class Strategy:
    """A plan for the three GEMMs of a layer (see the module docstring for the notation): a
    name, the three rule objects and the method's facts that are no GEMM's option.

    ``Strategy(name, forward, input_grad, weight_grad, **facts, **options)``: each GEMM is a
    rule key (default options) or a rule object (``Fixed(ir_coef=1.0)``); ``options``
    (:data:`OPTIONS`) go to the rules that declare them, as :meth:`with_options`.

    Attributes:
        rules: the rule objects of Eq. 1, 2 and 3 (:mod:`fst.rules`), each with its options.
        sparsifier: key of :data:`fst.sparsifier.SPARSIFIERS` holding the per-layer state its
            rules read (``""``: stateless). Required when a rule has ``state_keys``.
        dense_linear: Linear layers stay dense (the FST release; SFP's and ReSprop's too).
        dense_first_conv_weight: the first Conv2d keeps W dense in Eq. 1/2 (release).
        sr_ste_decay: whether SR-STE's decay (Eq. 6) belongs to the method. A fact of the
            method, not of its Eq. 1 rule: the same ``nm`` mask could be trained without it.

    Read-only aliases, each asking the rules: ``forward`` / ``input_grad`` / ``weight_grad``
    (the rule keys, e.g. ``"nm"``), and one per option of :data:`OPTIONS` (``ir_coef``,
    ``mask_layout``, ``prefix_tokens``, ...: :meth:`option`).
    """

    name: str
    rules: tuple[Rule, Rule, Rule]
    sparsifier: str = ""
    dense_linear: bool = False
    dense_first_conv_weight: bool = False
    sr_ste_decay: bool = True

    def __init__(
        self,
        name: str,
        forward: str | Rule = "dense",
        input_grad: str | Rule = "dense",
        weight_grad: str | Rule = "dense",
        *,
        sparsifier: str = "",
        dense_linear: bool = False,
        dense_first_conv_weight: bool = False,
        sr_ste_decay: bool = True,
        **options,
    ):
        rules = tuple(_rule(name, g, r) for g, r in zip(_GEMMS, (forward, input_grad, weight_grad)))
        set_ = object.__setattr__  # frozen
        set_(self, "name", name)
        set_(self, "rules", rules)
        set_(self, "sparsifier", sparsifier)
        set_(self, "dense_linear", dense_linear)
        set_(self, "dense_first_conv_weight", dense_first_conv_weight)
        set_(self, "sr_ste_decay", sr_ste_decay)
        if options:
            set_(self, "rules", self.with_options(**options).rules)
        self._check_state()

    def _check_state(self) -> None:
        """A rule that reads per-layer state needs a sparsifier that provides it (which state a
        sparsifier provides is checked when it is built, ``fst.sparsifier.build_sparsifier``)."""
        needed = {k for r in self.rules for k in r.state_keys}
        if needed and not self.sparsifier:
            stateful = [f"Eq. {r.eq} {r.key!r}" for r in self.rules if r.state_keys]
            raise ValueError(
                f"strategy {self.name!r}: rule(s) {', '.join(stateful)} read per-layer state "
                f"{sorted(needed)}; name the sparsifier that holds it (sparsifier=..., a key of "
                "fst.sparsifier.SPARSIFIERS)"
            )

    @property
    def forward(self) -> str:
        """The Eq. 1 rule's key (:data:`fst.rules.FORWARD_RULES`): ``dense`` W, ``nm`` S(W),
        ``tsm`` T(W), ..."""
        return self.rules[0].key

    @property
    def input_grad(self) -> str:
        """The Eq. 2 rule's key (:data:`fst.rules.INPUT_GRAD_RULES`): ``dense`` W^T dY, ``fwd``
        (forward weight)^T dY, ``nm_wt`` S(W^T) dY, ``nm_dy`` W^T S(dY), ..."""
        return self.rules[1].key

    @property
    def weight_grad(self) -> str:
        """The Eq. 3 rule's key (:data:`fst.rules.WEIGHT_GRAD_RULES`): ``dense`` dY X^T,
        ``fixed`` (dY + ir_coef shift(dY)) F(X^T), ``random4`` the release's, ..."""
        return self.rules[2].key

    def option(self, name: str):
        """The value of option ``name``: a rule switch's from the rule it chose, otherwise from
        the first rule (Eq. 1, 2, 3) that declares it, else the option's default."""
        if name in _RULE_SWITCHES:
            gemm, to_rule, _ = _RULE_SWITCHES[name]
            key = getattr(self, gemm)
            return next((v for v, k in to_rule.items() if k == key), _default(name))
        for r in self.rules:
            if name in r.__dataclass_fields__:
                return getattr(r, name)
        return _default(name)

    ir_coef = _option_alias("ir_coef")
    x_pattern = _option_alias("x_pattern")
    wt_source = _option_alias("wt_source")
    mask_layout = _option_alias("mask_layout")
    x_patterns = _option_alias("x_patterns")
    im2col_step = _option_alias("im2col_step")
    prefix_tokens = _option_alias("prefix_tokens")
    dy_ratio = _option_alias("dy_ratio")
    estimator = _option_alias("estimator")

    @property
    def is_dense(self) -> bool:
        return not any(r.prunes for r in self.rules)

    @property
    def uses_decay(self) -> bool:
        """SR-STE decay applies wherever the forward weight is pruned (and it is the method's)."""
        return self.sr_ste_decay and self.rules[0].prunes

    @property
    def traceable(self) -> bool:
        """torch.compile can trace its layers whole (no rule writes state in its backward)."""
        return not any(r.backward_writes_state for r in self.rules)

    @property
    def stateful(self) -> bool:
        """Its rules keep per-layer state across steps (held by :attr:`sparsifier`)."""
        return bool(self.sparsifier)

    def options_used(self) -> set[str]:
        """The :data:`OPTIONS` some rule of this plan reads (or whose rule choice they switch)."""
        used = {o for r in self.rules for o in r.options}
        for option, (gemm, to_rule, _) in _RULE_SWITCHES.items():
            if getattr(self, gemm) in to_rule.values():
                used.add(option)
        return used

    def replace(self, **changes) -> Strategy:
        """A copy with fields changed, like :func:`dataclasses.replace`: ``name``, the facts,
        a GEMM's rule (``forward=`` / ``input_grad=`` / ``weight_grad=``, a key or a rule
        object) and options."""
        args = dict(zip(_GEMMS, self.rules))
        for f in fields(self):
            if f.name != "rules":
                args[f.name] = getattr(self, f.name)
        return Strategy(**{**args, **changes})

    def with_options(self, **options) -> Strategy:
        """A copy with the options of :data:`OPTIONS` changed, each on the rules of this plan
        that declare it (a rule switch first chooses the rule: ``x_pattern``, ``wt_source``).

        Unknown names fail with the list; an option that no GEMM rule of this plan reads and
        that differs from the plan's own value fails naming the rules it has (it would silently
        do nothing).
        """
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown strategy option(s) {sorted(unknown)}; valid options: "
                + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
            )
        declared = _declared()
        for name, value in options.items():
            if name in _RULE_SWITCHES:
                to_rule = _RULE_SWITCHES[name][1]
                if value not in to_rule:
                    raise ValueError(f"{name}={value!r}; valid: {tuple(to_rule)}")
            for f in declared.get(name, ()):
                check_option(f, value)
        rules = list(self.rules)
        for name, (gemm, to_rule, _) in _RULE_SWITCHES.items():
            i = _GEMMS.index(gemm)
            if name not in options or rules[i].key not in to_rule.values():
                continue  # not a rule this option switches: reported as ignored below
            new = REGISTRIES[i + 1].get(to_rule[options[name]])
            if new.key != rules[i].key:  # the new rule keeps the options both declare (ir_coef)
                old = rules[i]
                kept = {k: getattr(old, k) for k in old.__dataclass_fields__}
                rules[i] = replace(new, **{k: v for k, v in kept.items() if k in new.options})
        for i, r in enumerate(rules):
            changes = {k: v for k, v in options.items() if k in r.__dataclass_fields__}
            if changes:
                rules[i] = replace(r, **changes)
        plan = self.replace(**dict(zip(_GEMMS, rules)))
        ignored = sorted(
            k for k in set(options) - plan.options_used() if options[k] != self.option(k)
        )
        if ignored:
            key = ignored[0]
            users = sorted(n for n, p in STRATEGIES.items() if key in p.options_used())
            raise ValueError(
                f"{key}={options[key]!r} has no effect with strategy {self.name!r} (its GEMM "
                f"rules Eq. 1 {plan.forward!r}, Eq. 2 {plan.input_grad!r}, Eq. 3 "
                f"{plan.weight_grad!r} do not read it"
                + (f"; nor {ignored[1:]}" if ignored[1:] else "")
                + f"); drop it, or choose a strategy that uses it: {', '.join(users) or 'none'}"
            )
        return plan

    def describe(self) -> dict[str, str]:
        """Human-readable Eq. 1-3 of this plan, as in the module table."""
        return {f"eq{i + 1}": r.formula(self) for i, r in enumerate(self.rules)}


STRATEGIES: Registry[Strategy] = Registry("strategy")
for _s in (
    Strategy("dense"),
    Strategy("srste", forward="nm", input_grad="fwd"),
    Strategy("tsm", forward="tsm", input_grad="fwd"),
    Strategy("fst2", forward="nm", input_grad="nm_wt"),
    Strategy("fst_noir", forward="nm", input_grad="nm_wt", weight_grad="fixed", ir_coef=0.0),
    Strategy("fst", forward="nm", input_grad="nm_wt", weight_grad="fixed", ir_coef=1.0),
    Strategy("wg", forward="nm", input_grad="nm_wt", weight_grad="nm_dy"),
    Strategy("wx", forward="nm", input_grad="nm_wt", weight_grad="nm_x"),
    Strategy("gg", forward="nm", input_grad="nm_dy", weight_grad="nm_dy"),
    Strategy("gx", forward="nm", input_grad="nm_dy", weight_grad="nm_x"),
    # Hu et al. (ICML 2024): transposable T(W) for Eq. 1 and 2, MVUE 2:4 of dY for Eq. 3
    Strategy("mvue", forward="tsm", input_grad="fwd", weight_grad="mvue"),
    Strategy(
        "fst_released",
        forward="nm",
        input_grad="regrouped",
        weight_grad="random4",
        ir_coef=0.03,
        dense_first_conv_weight=True,
        dense_linear=True,
    ),
    # Table 3's other baselines (fst/rules/meprop.py, resprop.py, forward.py; fst/sparsifier/).
    Strategy("meprop", input_grad="topk_dy", weight_grad="topk_dy", sr_ste_decay=False),
    Strategy(
        "resprop",
        input_grad="resprop",
        weight_grad="resprop",
        dense_linear=True,
        sparsifier="resprop",
        sr_ste_decay=False,
    ),
    Strategy("dpf", forward="held", input_grad="fwd", sparsifier="dpf", sr_ste_decay=False),
    Strategy("rigl", forward="held", input_grad="fwd", sparsifier="rigl", sr_ste_decay=False),
    Strategy(
        "asfp", forward="soft_filters", dense_linear=True, sparsifier="asfp", sr_ste_decay=False
    ),
    Strategy(
        "asp",
        forward="held_nm",
        input_grad="fwd",
        mask_layout="cin",
        sparsifier="asp",
        sr_ste_decay=False,
    ),
):
    STRATEGIES.register(_s.name, _s)


def get_strategy(strategy: str | Strategy, **options) -> Strategy:
    """Resolve a registry key (or pass a :class:`Strategy` through) and apply options."""
    s = strategy if isinstance(strategy, Strategy) else STRATEGIES.get(strategy)
    return s.with_options(**options) if options else s
