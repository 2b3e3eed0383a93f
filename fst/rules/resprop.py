"""ReSprop's two GEMM rules: reuse the previous iteration's output gradient, sparsified.

Sources: Goli, Aamodt, "ReSprop: Reuse Sparsified Backpropagation", CVPR 2020, and the
authors' released code (negargoli/ReSprop, ``models/ReSprop_conv.py``), read for the details.
Per convolution and iteration i, with ``G_i`` the output gradient dY (the release's
``grad_output``) and ``P`` one example's dY kept from iteration i - 1:

    G'_i = P + S(G_i - P)

where S keeps the largest-magnitude entries of the difference (the rest of G_i is "reused"
from P). ``G'_i`` replaces dY in both Eq. 2 (``dX = W^T G'_i``) and Eq. 3
(``dW = G'_i X^T``); the bias gradient and the forward pass stay dense. ``P`` broadcasts over
the batch, so the products with P can be precomputed during the forward pass ("pre-ReSprop")
and only the sparse difference runs in the backward pass: that is where the savings are.

What the release does and how it is followed here:

- ``P`` is a single example of the previous iteration's dY, chosen at random (the release
  stores ``grad_output[x]`` with a random index x and ``expand``s it over the batch). Here
  the plan's sparsifier draws the example uniformly over the batch from its own seeded
  generator (``state["pick"]`` in [0, 1)); the release draws x from ``random.randint`` over a
  range tied to the number of layers, an artefact this does not copy.
- S: the release zeroes ``|G_i - P| <= t`` with one threshold t per layer, halved or doubled
  after every iteration to steer the kept share towards its target. Here S is the exact top-k
  of that layer's difference over the whole batch tensor, with ``dy_ratio`` zeroed (the FST
  paper's Table 3 row: 50% of dY pruned): the same target, reached at every step instead of
  approached by the threshold controller.
- The first iteration (no P yet) uses the plain dY; the release also restarts at every
  epoch boundary (it clears its stored gradients), an artefact of its bookkeeping not copied.
- The release's optional warm-up (dense for two epochs, then a kept share falling by 10%
  per epoch) is not used: the FST paper reports ReSprop at its 50% setting.
- Only convolutions: the release's ResNets keep the final Linear dense (strategy
  ``resprop`` sets ``dense_linear``).

State (``state_keys``, kept by :class:`fst.sparsifier.resprop.ReSprop`): ``prev`` (P,
flattened; absent before the first step), ``next`` (this step's chosen example, which the
sparsifier makes ``prev`` after the optimizer step, so both rules of one backward pass read the
same P and a skipped step reuses nothing of its gradient) and ``pick``.
"""

from __future__ import annotations

import torch

from fst.masks import topk_mask
from fst.rules.base import Rule, option, register
from fst.rules.input_grad import InputGradRule
from fst.rules.weight_grad import WeightGradRule


def reuse(dy: torch.Tensor, ratio: float, state) -> torch.Tensor:
    """``P + S(dY - P)`` for ``dy`` [N, ...] (dim 0 the batch); records this step's example.

    Writes ``state["next"]``: example ``floor(pick * N)`` of ``dy``, flattened. Idempotent, so
    Eq. 2 and Eq. 3 may both call it in one backward pass.
    """
    if state is None or "pick" not in state:
        raise RuntimeError(
            "the ReSprop rules keep the previous step's gradient in the layer's state, but "
            "this layer has none: build the strategy's sparsifier (fst.build_sparsifier) and "
            "call its step() after every optimizer.step() (train.py does both)"
        )
    n = dy.shape[0]
    i = min(int(state["pick"] * n), n - 1)
    state["next"] = dy[i].detach().reshape(-1).clone()
    prev = state.get("prev")
    if prev is None or prev.numel() != dy[0].numel():
        return dy  # nothing to reuse yet
    prev = prev.to(dy.dtype).view(dy.shape[1:])
    diff = dy - prev
    return prev + diff * topk_mask(diff, ratio, start_dim=0)


def _check_ratio(v) -> str:
    return "" if 0.0 <= float(v) < 1.0 else f"dy_ratio={v} must be in [0, 1)"


class _ReSprop(Rule):
    """What ReSprop's two rules share: the operand, the state and the option."""

    operand = "dY"
    state_keys = ("prev", "next", "pick")
    backward_writes_state = True  # state["next"]: eager under torch.compile (fst.layers)
    dy_ratio: float = option(
        0.5,
        "resprop: share of the difference to the reused gradient zeroed (Table 3: 0.5)",
        check=_check_ratio,
    )

    def pattern(self, plan) -> str:
        return f"unstructured: previous dY + top-k of the difference ({self.dy_ratio:.0%} reused)"


@register
class ReSpropInput(_ReSprop, InputGradRule):
    """Eq. 2: ``dX = W^T (P + S(dY - P))``."""

    key = "resprop"
    prunes_dy = True

    def formula(self, plan) -> str:
        return "W^T R(dY)"

    def prune_dy(self, dy, dim, plan=None, state=None):
        return reuse(dy, self.dy_ratio, state)


@register
class ReSpropWeight(_ReSprop, WeightGradRule):
    """Eq. 3: ``dW = (P + S(dY - P)) X^T``."""

    key = "resprop"
    positions_axis = False

    def formula(self, plan) -> str:
        return "R(dY) X^T"

    def operands(self, dy, x, plan, dim=-1, width=None, state=None):
        return reuse(dy, self.dy_ratio, state), x
