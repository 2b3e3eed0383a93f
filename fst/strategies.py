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

Each mode key names a GEMM rule of :mod:`fst.rules` (``forward`` -> ``FORWARD_RULES``,
``input_grad`` -> ``INPUT_GRAD_RULES``, ``weight_grad`` -> ``WEIGHT_GRAD_RULES``); the rules
hold the arithmetic, their 2:4 checks and MAC shares. A strategy whose rules keep per-layer
state across steps names the sparsifier that holds it (``sparsifier``, a key of
:data:`fst.sparsifier.SPARSIFIERS`: its schedule). A strategy is one registry entry here plus
``configs/sparsity/<key>.yaml`` (which also lists its sparsifier's schedule parameters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fst.registry import Registry
from fst.rules import FORWARD_RULES, INPUT_GRAD_RULES, WEIGHT_GRAD_RULES

__all__ = ["Strategy", "STRATEGIES", "get_strategy", "OPTIONS"]

OPTIONS = {
    "ir_coef": "coefficient of the shifted gradient in IR (paper 1.0, release 0.03)",
    "x_pattern": "'fixed' (paper: F keeps even width index, IR adds the right neighbour) or "
    "'random4' (release: one of four patterns per im2col chunk, IR = roll over flat H*W)",
    "wt_source": "'dense' (paper: S(W^T) along Co from W) or 'pruned' (release: S(W) pruned "
    "again in 4x4-regrouped fours inside one filter; not 2:4 along Co)",
    "mask_layout": "'im2col' (paper: S(W) along Ci*kh*kw) or 'cin' (along Ci per kernel position)",
    "x_patterns": "with x_pattern=random4: the release's patterns drawn from (default 'abcd'; "
    "one letter forces that pattern)",
    "im2col_step": "with x_pattern=random4: samples per im2col chunk (release: 256)",
    "dy_ratio": "meprop/resprop: share of dY entries zeroed (meProp: of each example's dY; "
    "ReSprop: of the difference to the reused gradient); Table 3: 0.5",
    "estimator": "mvue: 'approx' (Hu et al.'s kernel, two draws without replacement) or "
    "'exact' (minimum-variance 2:4: keep g_k with probability min(1, c|g_k|), summing to 2)",
    "prefix_tokens": "Eq. 3 of a vision transformer's Linear layers: 'dense' (class, register "
    "and distillation tokens' dY X^T unpruned) or 'include' (they form one more row, pruned by "
    "the Eq. 3 rule)",
}
# Options that choose between two rules of one GEMM: option -> (field, {value: rule key}).
_RULE_SWITCHES = {
    "x_pattern": ("weight_grad", {"fixed": "fixed", "random4": "random4"}),
    "wt_source": ("input_grad", {"dense": "nm_wt", "pruned": "regrouped"}),
}
_CHOICES = {
    "mask_layout": ("im2col", "cin"),
    "prefix_tokens": ("dense", "include"),
    "estimator": ("approx", "exact"),
}


@dataclass(frozen=True)
class Strategy:
    """A plan for the three GEMMs of a layer (see the module docstring for the notation).

    Attributes:
        forward: Eq. 1 rule key (:data:`fst.rules.FORWARD_RULES`): ``dense`` W, ``nm`` S(W),
            ``tsm`` T(W).
        input_grad: Eq. 2 rule key (:data:`fst.rules.INPUT_GRAD_RULES`): ``dense`` W^T dY,
            ``fwd`` (forward weight)^T dY, ``nm_wt`` S(W^T) dY, ``nm_dy`` W^T S(dY),
            ``regrouped`` the release's twice-pruned weight.
        weight_grad: Eq. 3 rule key (:data:`fst.rules.WEIGHT_GRAD_RULES`): ``dense`` dY X^T,
            ``fixed`` (dY + ir_coef shift(dY)) F(X^T), ``random4`` the release's, ``nm_dy``
            S(dY) X^T, ``nm_x`` dY S(X^T), ``mvue`` MVUE(dY) X^T.
        ir_coef, x_pattern, wt_source, mask_layout, x_patterns, im2col_step, prefix_tokens:
            options
            (:data:`OPTIONS`); ``x_pattern`` and ``wt_source`` mirror the rule choice
            (``random4``, ``regrouped``) they switch.
        dense_first_conv_weight: the first Conv2d keeps W dense in Eq. 1/2 (release).
        dense_linear: Linear layers stay dense (the FST release; SFP's and ReSprop's too).
        dy_ratio: option of the ``topk_dy`` and ``resprop`` rules (:data:`OPTIONS`).
        estimator: option of the ``mvue`` rule (:data:`OPTIONS`).
        sparsifier: key of :data:`fst.sparsifier.SPARSIFIERS` holding the per-layer state its
            rules read (``""``: stateless). Required when a rule has ``state_keys``.
        sr_ste_decay: whether SR-STE's decay (Eq. 6) belongs to the method.
    """

    name: str
    forward: str = "dense"
    input_grad: str = "dense"
    weight_grad: str = "dense"
    ir_coef: float = 0.0
    x_pattern: str = "fixed"
    wt_source: str = "dense"
    mask_layout: str = "im2col"
    x_patterns: str = "abcd"
    im2col_step: int = 256
    prefix_tokens: str = "dense"
    dense_first_conv_weight: bool = False
    dense_linear: bool = False
    dy_ratio: float = 0.5
    estimator: str = "approx"
    sparsifier: str = ""
    sr_ste_decay: bool = True
    # The rule objects of Eq. 1, 2 and 3 (:mod:`fst.rules`), looked up once. A plain attribute
    # set in __post_init__, not a cached_property: torch.compile cannot trace the lock
    # functools.cached_property takes on Python < 3.12.
    rules: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for field, reg in (
            ("forward", FORWARD_RULES),
            ("input_grad", INPUT_GRAD_RULES),
            ("weight_grad", WEIGHT_GRAD_RULES),
        ):
            if getattr(self, field) not in reg:
                raise ValueError(
                    f"strategy {self.name!r}: {field}={getattr(self, field)!r}; valid: "
                    + ", ".join(reg.keys())
                )
        for option, (field, to_rule) in _RULE_SWITCHES.items():
            from_rule = {v: k for k, v in to_rule.items()}
            rule_key = getattr(self, field)
            if rule_key in from_rule:  # keep the option in step with the rule it switched
                object.__setattr__(self, option, from_rule[rule_key])
        for option, valid in _CHOICES.items():
            if getattr(self, option) not in valid:
                raise ValueError(f"{option}={getattr(self, option)!r}; valid: {valid}")
        bad = set(self.x_patterns) - set("abcd")
        if not self.x_patterns or bad:
            raise ValueError(f"x_patterns={self.x_patterns!r}: letters of 'abcd', at least one")
        if int(self.im2col_step) < 1:
            raise ValueError(f"im2col_step={self.im2col_step} must be >= 1")
        if not 0.0 <= float(self.dy_ratio) < 1.0:
            raise ValueError(f"dy_ratio={self.dy_ratio} must be in [0, 1)")
        rules = (
            FORWARD_RULES.get(self.forward),
            INPUT_GRAD_RULES.get(self.input_grad),
            WEIGHT_GRAD_RULES.get(self.weight_grad),
        )
        object.__setattr__(self, "rules", rules)
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
        eq3 = self.rules[2]
        if eq3.prunes and eq3.positions_axis:  # Eq. 3 split by token layout (ViT layers)
            used.add("prefix_tokens")
        for option, (field, to_rule) in _RULE_SWITCHES.items():
            if getattr(self, field) in to_rule.values():
                used.add(option)
        return used

    def with_options(self, **options) -> Strategy:
        """A copy with the options of :data:`OPTIONS` changed.

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
        changes = dict(options)
        for option, (field, to_rule) in _RULE_SWITCHES.items():
            if option in changes:
                value = changes[option]
                if value not in to_rule:
                    raise ValueError(f"{option}={value!r}; valid: {tuple(to_rule)}")
                if getattr(self, field) not in to_rule.values():
                    continue  # not a rule this option switches: reported as ignored below
                changes[field] = to_rule[value]
        plan = dataclasses.replace(self, **changes)
        ignored = sorted(
            k for k in set(options) - plan.options_used() if options[k] != getattr(self, k)
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
