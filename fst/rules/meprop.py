"""meProp's two GEMM rules: the output gradient pruned to its top-k, in Eq. 2 and Eq. 3.

Source: Sun, Ren, Ma, Wang, "meProp: Sparsified Back Propagation for Accelerated Deep
Learning with Reduced Overfitting", ICML 2017, Sec. 2, and the released code
(lancopku/meProp, ``src/pytorch/functions.py``, class ``linear``). For a layer ``y = W x``
the backward pass keeps only the k entries of the output gradient ``dY`` with the largest
magnitude, zeroes the rest, and uses that same sparse ``top_k(dY)`` for both products:
``dX = W^T top_k(dY)`` (Eq. 2) and ``dW = top_k(dY) x^T`` (Eq. 3). The forward pass and the
bias gradient (the release's ``db`` sums the plain dY) are dense. The release's ``linear``
selects the top-k of each example (row of dY) separately; its ``linearUnified`` (one index
set shared by the mini-batch) is the later "unified" variant, not used here.

Choices where the paper is silent or written for another layer type (evidence for the
coordinator's notes):

- Granularity: meProp selects top-k per example (each example's output vector of an MLP /
  LSTM layer). A convolution's output gradient for one example is the whole (Co, H, W)
  tensor, so the top-k runs over all Co*H*W entries of each example; a Linear over all
  entries of each leading index (dim 0), which is exactly the paper's case for a 2-D input.
- k: the FST paper's Table 3 row prunes 50% ("50%x2"): ``dy_ratio=0.5`` zeroes
  ``floor(0.5 * n)`` of each example's ``n`` entries (k = n - floor(ratio * n) kept).
- Every Conv2d and Linear is pruned (the paper applies meProp to every layer it trains).

Unstructured, so no sparse tensor core runs either GEMM: Figure 2 counts both dense.
"""

from __future__ import annotations

import torch

from fst.masks import topk_mask
from fst.rules.base import Rule, option, register
from fst.rules.input_grad import InputGradRule
from fst.rules.weight_grad import WeightGradRule


def top_k(dy: torch.Tensor, ratio: float) -> torch.Tensor:
    """``dy`` with all but the largest-magnitude ``n - floor(ratio * n)`` entries of each
    example (dim 0) zeroed."""
    return dy * topk_mask(dy, ratio, start_dim=1)


def _check_ratio(v) -> str:
    return "" if 0.0 <= float(v) < 1.0 else f"dy_ratio={v} must be in [0, 1)"


class _TopK(Rule):
    """What meProp's two rules share: the pruned operand and the option."""

    operand = "dY"
    dy_ratio: float = option(
        0.5, "meprop: share of each example's dY entries zeroed (Table 3: 0.5)", check=_check_ratio
    )

    def pattern(self, plan) -> str:
        return f"unstructured top-k per example ({self.dy_ratio:.0%} zero)"


@register
class TopkInput(_TopK, InputGradRule):
    """Eq. 2: ``dX = W^T top_k(dY)``."""

    key = "topk_dy"
    prunes_dy = True

    def formula(self, plan) -> str:
        return "W^T topk(dY)"

    def prune_dy(self, dy, dim, plan=None, state=None):
        return top_k(dy, self.dy_ratio)


@register
class TopkWeight(_TopK, WeightGradRule):
    """Eq. 3: ``dW = top_k(dY) X^T`` with the same per-example top-k as Eq. 2."""

    key = "topk_dy"
    positions_axis = False

    def formula(self, plan) -> str:
        return "topk(dY) X^T"

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        return top_k(dy, self.dy_ratio), x
