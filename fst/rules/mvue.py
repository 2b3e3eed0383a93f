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
use this sampling-without-replacement estimate, which is cheaper and also unbiased.)

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
from fst.rules.base import register
from fst.rules.weight_grad import WeightGradRule

__all__ = ["mvue24", "inclusion_probabilities", "MVUE"]


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


def inclusion_probabilities(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``q`` shaped like the magnitudes ``a``: the probability that :func:`mvue24` keeps each
    entry of its group of 4 consecutive entries along ``dim``."""
    dim = dim % a.dim()
    grp = _groups(a, dim, 4)
    q = _inclusion(list(grp.unbind(2)), torch.finfo(a.dtype).tiny)
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


def mvue24(g: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unbiased 2:4 sample of ``g`` along ``dim`` (see the module docstring).

    Args:
        g: any shape and float dtype.
        dim: the dimension the groups of 4 consecutive entries run along (zero-padded).
    Returns:
        a tensor shaped like ``g`` with at most 2 nonzeros per group of 4 along ``dim`` and
        ``E[out] = g``; the kept entries are ``g / q`` (``q``: :func:`inclusion_probabilities`).
    """
    if g.numel() == 0:
        return g.clone()
    dim = dim % g.dim()
    work = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
    tiny = torch.finfo(work.dtype).tiny
    grp = _groups(work.detach(), dim, 4)  # [pre, G, 4, post]
    vals = grp.unbind(2)
    a = [v.abs() for v in vals]
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
    """``MVUE(dY) X^T``: dY replaced by :func:`mvue24` along the positions axis."""

    key = "mvue"
    operand = "dY"

    def formula(self, plan) -> str:
        return "MVUE(dY) X^T"

    def tensor_core(self, plan) -> bool:
        return True  # at most 2 of every 4 consecutive positions by construction

    def operands(self, dy, x, plan, dim=-1, width=None):
        return mvue24(dy, dim), x
