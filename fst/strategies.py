"""Pruning strategies: what each of a layer's three GEMMs prunes.

For a convolution with weight ``W`` (Co, Ci, kh, kw) seen as the matrix (Co, Ci*kh*kw) and
``X`` its im2col matrix (Ci*kh*kw rows, one column per output position):

=============  ==================  ====================  ===============================
key            Eq. 1 forward       Eq. 2 input gradient  Eq. 3 weight gradient
=============  ==================  ====================  ===============================
``dense``      W X                 W^T dY                dY X^T
``srste``      S(W) X              W^T dY                dY X^T
``tsm``        T(W) X              T(W)^T dY             dY X^T
``fst2``       S(W) X              S(W^T) dY             dY X^T
``fst_noir``   S(W) X              S(W^T) dY             dY F(X^T)
``fst``        S(W) X              S(W^T) dY             (dY + shift(dY)) F(X^T)  (IR)
``wg``         S(W) X              S(W^T) dY             S(dY) X^T
``wx``         S(W) X              S(W^T) dY             dY S(X^T)
``gg``         S(W) X              W^T S(dY)             S(dY) X^T
``gx``         S(W) X              W^T S(dY)             dY S(X^T)
=============  ==================  ====================  ===============================

Group directions (always the reduction dimension of the GEMM the pruned operand feeds):

- ``S(W)``: 4 consecutive entries of the flattened (Ci, kh, kw) of each output channel
  (PyTorch's im2col order), zero-padded when Ci*kh*kw % 4 != 0 (``mask_layout="im2col"``,
  the paper); or 4 consecutive input channels at each kernel position (``mask_layout="cin"``,
  SR-STE's release and what channels-last sparse tensor cores need).
- ``S(W^T)``: 4 consecutive output channels for each (ci, kh, kw), computed from the dense W
  (``wt_source="dense"``, the paper). ``wt_source="pruned"`` is the released code instead:
  S(W) pruned again in fours regrouped inside one filter (see :mod:`fst.ops.released`).
- ``T(W)``: exact transposable mask of W as (Co, Ci*kh*kw); serves Eq. 1 and Eq. 2.
- ``S(dY)`` in Eq. 2: 4 consecutive output channels. ``S(dY)`` in Eq. 3 and ``S(X^T)``: 4
  consecutive output positions of the flattened H*W of each sample, zero-padded.
- ``F(X^T)``: keep output positions with even width index (0-based). Information
  Restoration adds ``ir_coef * dY(h, w+1)`` onto ``dY(h, w)`` for every even ``w`` that has a
  right neighbour (Eq. 10; ``ir_coef`` 1.0 in the paper, 0 = no IR). ``x_pattern="random4"``
  replaces F and the shift by the released code's (:mod:`fst.ops.released`).

``fst_released`` is the authors' released code: ``ir_coef=0.03``, ``x_pattern="random4"``,
``wt_source="pruned"``, the first convolution's weight dense (its X still masked) and every
Linear layer dense.

For ``nn.Linear`` (W: out x in, input [..., tokens, in]) S(W) runs along ``in``, S(W^T)
along ``out``, and the "width" axis of Eq. 3 is the token axis (dim -2) of inputs with 3 or
more dims. For 2-D inputs [batch, in] there is no spatial axis, so Eq. 3 masks are not
applied (dense dW).

SR-STE decay (Eq. 6): every strategy but ``dense`` adds ``decay * (W - S(W))`` to
``weight.grad`` with the forward-pruned weight (``T(W)`` for ``tsm``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fst.registry import Registry

__all__ = ["Strategy", "STRATEGIES", "get_strategy", "OPTIONS"]

FORWARD = ("dense", "nm", "tsm")
INPUT_GRAD = ("dense", "fwd", "nm_wt", "nm_dy")
WEIGHT_GRAD = ("dense", "fixed", "nm_dy", "nm_x")
OPTIONS = {
    "ir_coef": "coefficient of the shifted gradient in IR (paper 1.0, release 0.03)",
    "x_pattern": "'fixed' (paper: F keeps even width index, IR adds the right neighbour) or "
    "'random4' (release: one of four patterns per im2col chunk, IR = roll over flat H*W)",
    "wt_source": "'dense' (paper: S(W^T) along Co from W) or 'pruned' (release: S(W) pruned "
    "again in 4x4-regrouped fours inside one filter; not 2:4 along Co)",
    "mask_layout": "'im2col' (paper: S(W) along Ci*kh*kw) or 'cin' (along Ci per kernel position)",
}


@dataclass(frozen=True)
class Strategy:
    """A plan for the three GEMMs of a layer (see the module docstring for the notation).

    Attributes:
        forward: Eq. 1 weight: ``dense`` W, ``nm`` S(W), ``tsm`` T(W).
        input_grad: Eq. 2: ``dense`` W^T dY, ``fwd`` (forward weight)^T dY,
            ``nm_wt`` S(W^T) dY, ``nm_dy`` W^T S(dY).
        weight_grad: Eq. 3: ``dense`` dY X^T, ``fixed`` (dY + ir_coef shift(dY)) F(X^T),
            ``nm_dy`` S(dY) X^T, ``nm_x`` dY S(X^T).
        ir_coef: Information Restoration coefficient, used with ``weight_grad="fixed"``.
        x_pattern: ``fixed`` (paper) or ``random4`` (release) X mask and shift of Eq. 3.
        wt_source: Eq. 2 weight: ``dense`` S(W^T) (paper) or ``pruned`` (release).
        mask_layout: grouping of ``S(W)`` for convolutions: ``im2col`` or ``cin``.
        dense_first_conv_weight: the first Conv2d keeps W dense in Eq. 1/2 (release).
        dense_linear: Linear layers stay dense (release).
    """

    name: str
    forward: str = "dense"
    input_grad: str = "dense"
    weight_grad: str = "dense"
    ir_coef: float = 0.0
    x_pattern: str = "fixed"
    wt_source: str = "dense"
    mask_layout: str = "im2col"
    dense_first_conv_weight: bool = False
    dense_linear: bool = False

    def __post_init__(self):
        for field, value, valid in (
            ("forward", self.forward, FORWARD),
            ("input_grad", self.input_grad, INPUT_GRAD),
            ("weight_grad", self.weight_grad, WEIGHT_GRAD),
            ("x_pattern", self.x_pattern, ("fixed", "random4")),
            ("wt_source", self.wt_source, ("dense", "pruned")),
            ("mask_layout", self.mask_layout, ("im2col", "cin")),
        ):
            if value not in valid:
                raise ValueError(f"strategy {self.name!r}: {field}={value!r}; valid: {valid}")

    @property
    def is_dense(self) -> bool:
        return (self.forward, self.input_grad, self.weight_grad) == ("dense", "dense", "dense")

    @property
    def uses_decay(self) -> bool:
        """SR-STE decay applies wherever the forward weight is pruned."""
        return self.forward != "dense"

    def with_options(self, **options) -> Strategy:
        """A copy with the options of :data:`OPTIONS` changed; unknown names fail with the list."""
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown strategy option(s) {sorted(unknown)}; valid options: "
                + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
            )
        return dataclasses.replace(self, **options)

    def describe(self) -> dict[str, str]:
        """Human-readable Eq. 1-3 of this plan, as in the module table."""
        w = {"dense": "W", "nm": "S(W)", "tsm": "T(W)"}[self.forward]
        eq2 = {
            "dense": "W^T dY",
            "fwd": f"{w}^T dY",
            "nm_wt": "S(W^T) dY" if self.wt_source == "dense" else "R(S(W))^T dY",
            "nm_dy": "W^T S(dY)",
        }[self.input_grad]
        if self.weight_grad == "fixed" and self.x_pattern == "random4":
            g = f"(dY + {self.ir_coef:g}*roll(dY))" if self.ir_coef else "dY"
            eq3 = f"{g} P4(X^T)"
        elif self.weight_grad == "fixed":
            eq3 = f"(dY + {self.ir_coef:g}*shift(dY)) F(X^T)" if self.ir_coef else "dY F(X^T)"
        else:
            eq3 = {"dense": "dY X^T", "nm_dy": "S(dY) X^T", "nm_x": "dY S(X^T)"}[self.weight_grad]
        return {"eq1": f"{w} X", "eq2": eq2, "eq3": eq3}


STRATEGIES: Registry[Strategy] = Registry("strategy")
for _s in (
    Strategy("dense"),
    Strategy("srste", forward="nm"),
    Strategy("tsm", forward="tsm", input_grad="fwd"),
    Strategy("fst2", forward="nm", input_grad="nm_wt"),
    Strategy("fst_noir", forward="nm", input_grad="nm_wt", weight_grad="fixed", ir_coef=0.0),
    Strategy("fst", forward="nm", input_grad="nm_wt", weight_grad="fixed", ir_coef=1.0),
    Strategy("wg", forward="nm", input_grad="nm_wt", weight_grad="nm_dy"),
    Strategy("wx", forward="nm", input_grad="nm_wt", weight_grad="nm_x"),
    Strategy("gg", forward="nm", input_grad="nm_dy", weight_grad="nm_dy"),
    Strategy("gx", forward="nm", input_grad="nm_dy", weight_grad="nm_x"),
    Strategy(
        "fst_released",
        forward="nm",
        input_grad="nm_wt",
        weight_grad="fixed",
        ir_coef=0.03,
        x_pattern="random4",
        wt_source="pruned",
        dense_first_conv_weight=True,
        dense_linear=True,
    ),
):
    STRATEGIES.register(_s.name, _s)


def get_strategy(strategy: str | Strategy, **options) -> Strategy:
    """Resolve a registry key (or pass a :class:`Strategy` through) and apply options."""
    s = strategy if isinstance(strategy, Strategy) else STRATEGIES.get(strategy)
    return s.with_options(**options) if options else s
