"""Eq. 3 rule ``mvue``: an unbiased 2:4 sample of dY (the transformer anchors' gradient rule).

Sources:

- Chmiel, Hubara, Banner, Soudry, "Minimum Variance Unbiased N:M Sparsity for the Neural
  Gradients", ICLR 2023: pruning the neural gradient dY to N:M by magnitude (S(dY), Table 1's
  WG/GG) biases the weight gradient, and that is what fails; an *unbiased* N:M estimate of
  dY keeps E[dW] exact, and among unbiased estimates the minimum-variance one is the target.
- Hu, Zhao, Huang, Chen, Zhu, "Accelerating Transformer Pre-training with 2:4 Sparsity",
  ICML 2024: transposable 2:4 weights T(W) for Eq. 1 and 2, and dW = MVUE(dY^T) X for Eq. 3,
  the 2:4 groups along tokens (the reduction dimension of dW). Strategy ``mvue`` is this
  recipe (:mod:`fst.strategies`).

The estimator is the one Hu et al.'s released kernels compute (``_MVUE24_approx`` in
``huyz2023/2by4-pretrain``): in every group of 4 entries g with magnitudes a = |g|, S = sum a,

1. draw one index i with probability a_i / S,
2. draw a second j != i from the other three with probability a_j / (S - a_i),
3. keep g_k / q_k for k in {i, j} and zero the other two, with the inclusion probability
   ``q_k = a_k / S + a_k * sum_{l != k} (a_l / S) / (S - a_l)``.

So E[out_k] = q_k * g_k / q_k = g_k: unbiased, and exactly 2 of 4 kept. (Their code base also
holds the exact minimum-variance 2:4 distribution over the six patterns, ``MVUE24``; its kernels
use this sampling-without-replacement estimate, which is cheaper and also unbiased.) This is
``estimator="approx"`` (the default, config ``sparsity.estimator=approx``).

``estimator="exact"`` (``sparsity.estimator=exact``) is the minimum-variance unbiased 2:4
estimator (Chmiel et al., Sec. 4): an unbiased estimator that keeps entry k with probability
q_k (and then g_k / q_k) has total variance ``sum_k g_k^2 (1 / q_k - 1)``; minimised under
``sum_k q_k = 2`` (at most 2 of 4 kept on average, exactly 2 here) and ``q_k <= 1`` it gives
``q_k = min(1, c |g_k|)`` with c such that the q_k of the group sum to 2 (water-filling: at
most one entry can saturate unless two or fewer are nonzero). The group is then sampled
systematically: one uniform u per group keeps the k whose interval
``[q_0 + ... + q_{k-1}, q_0 + ... + q_k)`` contains u or u + 1; as every q_k <= 1 and they sum
to 2, that is exactly 2 distinct entries, each with probability q_k. Example: g = [5, 1, -1,
0.5] gives q = [1, 0.4, 0.4, 0.2] and total variance 4.0; the approximation's q = [0.919,
0.430, 0.430, 0.221] gives 5.73 (``tests/rules/test_mvue.py``).

What differs from their kernel, and why:

- They add eps = 1.19e-7 to every magnitude (against 0/0 in all-zero groups) and rescale
  ``|g| + eps``, which biases tiny entries; here all-zero groups and groups with a single
  nonzero are handled exactly (a term with ``S - a_l = 0`` only arises when every other entry
  is zero), so the estimate is unbiased for every input. Probabilities are computed in float32
  for half-precision dY.
- Groups: 4 consecutive positions of each sample along the positions axis, a trailing partial
  group zero-padded (as S(dY) here); the kernel groups the flattened batch x tokens axis. The
  two agree when the positions per sample are a multiple of 4, e.g. a ViT's 8x8 or 14x14 patch
  grid with the class token kept dense (:mod:`fst.tokens`).
- Randomness: two uniforms per group from the torch generator of dY's device, which the run
  seeds and its checkpoints save, so runs repeat and resume exactly.
"""

from __future__ import annotations

import torch

from fst.masks import _groups, _ungroup
from fst.rules.base import option, register
from fst.rules.weight_grad import WeightGradRule

__all__ = ["mvue24", "inclusion_probabilities", "ESTIMATORS", "MVUE"]

# sparsity.estimator / MVUE.estimator: Hu et al.'s kernel, or the minimum-variance one
ESTIMATORS = ("approx", "exact")


def _inclusion(a: list[torch.Tensor], tiny: float) -> list[torch.Tensor]:
    """``q_k`` = P(k is one of the two draws) for the four magnitude slices ``a`` of a group.

    ``q_k = p_k + a_k * sum_{l != k} p_l / (S - a_l)`` with ``p = a / S``; ``S - a_l`` is
    summed from the other three (no cancellation when ``a_l`` dominates). Where ``S - a_l = 0``
    (l the only nonzero), the huge ``r_l`` only meets ``a_k = 0``; all-zero groups give q = 0.
    """
    a0, a1, a2, a3 = a
    s = (a0 + a1 + a2 + a3).clamp_min(tiny)
    rest = (a1 + a2 + a3, a0 + a2 + a3, a0 + a1 + a3, a0 + a1 + a2)
    p = [ak / s for ak in a]
    r = [pk / ok.clamp_min(tiny) for pk, ok in zip(p, rest)]
    r0, r1, r2, r3 = r
    others = (r1 + r2 + r3, r0 + r2 + r3, r0 + r1 + r3, r0 + r1 + r2)
    return [pk + ak * rk for pk, ak, rk in zip(p, a, others)]


def _inclusion_exact(a: list[torch.Tensor], tiny: float) -> list[torch.Tensor]:
    """Minimum-variance ``q_k = min(1, c a_k)`` with ``sum_k q_k = 2`` (fewer nonzeros than 2:
    q = 1 on each nonzero). c = 2 / S unless the largest entry would exceed 1 (2 a_max > S);
    then it saturates and c = 1 / (S - a_max) spreads the remaining 1 over the other three."""
    a0, a1, a2, a3 = a
    s = a0 + a1 + a2 + a3
    amax = torch.maximum(torch.maximum(a0, a1), torch.maximum(a2, a3))
    c = torch.where(2 * amax > s, 1 / (s - amax).clamp_min(tiny), 2 / s.clamp_min(tiny))
    return [(ak * c).clamp(max=1.0) for ak in a]


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; valid: {ESTIMATORS}")


def inclusion_probabilities(
    a: torch.Tensor, dim: int = -1, estimator: str = "approx"
) -> torch.Tensor:
    """``q`` shaped like the magnitudes ``a``: the probability that :func:`mvue24` keeps each
    entry of its group of 4 consecutive entries along ``dim`` (with that ``estimator``)."""
    _check_estimator(estimator)
    dim = dim % a.dim()
    grp = _groups(a, dim, 4)
    inclusion = _inclusion if estimator == "approx" else _inclusion_exact
    q = inclusion(list(grp.unbind(2)), torch.finfo(a.dtype).tiny)
    return _ungroup(torch.stack(q, dim=2), a.shape, dim)


def _draw(a: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """Index in 0..3 drawn with probability proportional to ``a`` (four slices), ``u`` uniform
    in [0, 1): inverse CDF, the first k with ``a_0 + ... + a_k > u * S`` (never a zero entry
    when S > 0)."""
    c0 = a[0]
    c1 = c0 + a[1]
    c2 = c1 + a[2]
    thr = u * (c2 + a[3])
    return (c0 <= thr).to(torch.uint8) + (c1 <= thr) + (c2 <= thr)


def _systematic(q: list[torch.Tensor], u: torch.Tensor) -> list[torch.Tensor]:
    """Systematic sampling of a group: entry k is kept when u or u + 1 falls in
    ``[C_{k-1}, C_k)``, C the running sum of ``q`` (``u`` uniform in [0, 1)). Each entry is
    kept with probability q_k; with q_k <= 1 summing to 2, exactly two are kept."""
    kept, prev = [], torch.zeros_like(u)
    for qk in q:
        cur = prev + qk
        # points u + j (j = 0, 1) below a bound t: ceil(t - u), clamped to [0, 2]
        hits = (cur - u).ceil().clamp(0, 2) - (prev - u).ceil().clamp(0, 2)
        kept.append((hits > 0) & (qk > 0))
        prev = cur
    return kept


def mvue24(g: torch.Tensor, dim: int = -1, estimator: str = "approx") -> torch.Tensor:
    """Unbiased 2:4 sample of ``g`` along ``dim`` (see the module docstring).

    Args:
        g: any shape and float dtype.
        dim: the dimension the groups of 4 consecutive entries run along (zero-padded).
        estimator: ``"approx"`` (Hu et al.'s kernel: two draws without replacement, the
            default) or ``"exact"`` (minimum variance: q_k = min(1, c |g_k|), sum 2).
    Returns:
        a tensor shaped like ``g`` with at most 2 nonzeros per group of 4 along ``dim`` and
        ``E[out] = g``; the kept entries are ``g / q`` (``q``: :func:`inclusion_probabilities`).
    """
    _check_estimator(estimator)
    if g.numel() == 0:
        return g.clone()
    dim = dim % g.dim()
    work = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
    tiny = torch.finfo(work.dtype).tiny
    grp = _groups(work.detach(), dim, 4)  # [pre, G, 4, post]
    vals = grp.unbind(2)
    a = [v.abs() for v in vals]
    if estimator == "exact":
        q = _inclusion_exact(a, tiny)
        kept = _systematic(q, torch.rand(vals[0].shape, dtype=work.dtype, device=work.device))
        out = [v * k / qk.clamp_min(tiny) for v, k, qk in zip(vals, kept, q)]
        return _ungroup(torch.stack(out, dim=2), work.shape, dim).to(g.dtype)
    q = _inclusion(a, tiny)
    u = torch.rand(2, *vals[0].shape, dtype=work.dtype, device=work.device)
    first = _draw(a, u[0])
    second = _draw([ak * (first != k) for k, ak in enumerate(a)], u[1])
    out = [
        v * ((first == k) | (second == k)) / qk.clamp_min(tiny)
        for k, (v, qk) in enumerate(zip(vals, q))
    ]
    return _ungroup(torch.stack(out, dim=2), work.shape, dim).to(g.dtype)


@register
class MVUE(WeightGradRule):
    """``MVUE(dY) X^T``: dY replaced by :func:`mvue24` along the positions axis, with the
    option ``estimator`` (``approx`` or ``exact``)."""

    key = "mvue"
    operand = "dY"
    estimator: str = option(
        "approx",
        "mvue: 'approx' (Hu et al.'s kernel, two draws without replacement) or 'exact' "
        "(minimum-variance 2:4: keep g_k with probability min(1, c|g_k|), summing to 2)",
        choices=ESTIMATORS,
    )

    def formula(self, plan) -> str:
        return "MVUE(dY) X^T" if self.estimator == "approx" else "MVUE_exact(dY) X^T"

    def tensor_core(self, plan) -> bool:
        return True  # at most 2 of every 4 consecutive positions by construction

    def operands(self, dy, x, plan, dim=-1, width=None):
        return mvue24(dy, dim, self.estimator), x
