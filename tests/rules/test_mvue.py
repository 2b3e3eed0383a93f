"""MVUE 2:4 of dY (Chmiel et al. 2023, as Hu et al. 2024 use it) against its own definition.

The oracle enumerates the sampling scheme of Hu et al.'s kernel for one group of four: the
first index i with probability a_i / S, the second j != i with probability a_j / (S - a_i).
From the ordered pairs it gets each entry's inclusion probability q_k, and the estimator keeps
g_k / q_k. Nothing here calls the formula under test for the expected values.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import fst
from fst.masks import is_nm, transposable_mask
from fst.rules.mvue import inclusion_probabilities, mvue24
from fst.strategies import get_strategy
from fst.tokens import TokenLayout

GROUPS = [
    [0.5, -1.0, 2.0, 0.25],
    [3.0, 0.0, 0.0, 0.0],  # one nonzero: kept as is, with probability 1
    [0.0, 0.0, 0.0, 0.0],  # all zero: stays zero
    [1.0, 1.0, -1.0, 1.0],  # ties
    [100.0, 1e-3, -2e-3, 1e-4],  # one entry dominates (S - a_l cancels)
    [0.0, -0.7, 0.0, 0.3],
]


def pair_probabilities(group):
    """{(i, j): P(first = i, second = j)} of the scheme, by enumeration."""
    a = [abs(v) for v in group]
    s = sum(a)
    out = {}
    for i, j in itertools.permutations(range(4), 2):
        if s == 0 or a[i] == 0:
            continue
        rest = s - a[i]
        if rest == 0:  # the others are all zero: the second draw keeps a zero, i.e. nothing
            out[(i, j)] = (a[i] / s) / 3
        elif a[j]:
            out[(i, j)] = (a[i] / s) * (a[j] / rest)
    return out


def enumerated_inclusion(group):
    q = [0.0] * 4
    for (i, j), p in pair_probabilities(group).items():
        q[i] += p
        q[j] += p
    return torch.tensor(q, dtype=torch.float64)


@pytest.mark.parametrize("group", GROUPS)
def test_inclusion_probabilities_match_the_enumerated_scheme(group):
    g = torch.tensor(group, dtype=torch.float64)
    q = enumerated_inclusion(group)
    nonzero = g != 0
    got = inclusion_probabilities(g.abs())
    torch.testing.assert_close(got[nonzero], q[nonzero], rtol=1e-12, atol=1e-12)
    # unbiased: sum over outcomes of P(outcome) * kept value = g
    expect = torch.zeros(4, dtype=torch.float64)
    for (i, j), p in pair_probabilities(group).items():
        for k in {i, j}:
            if g[k] != 0:
                expect[k] += p * g[k] / q[k]
    torch.testing.assert_close(expect, g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group", GROUPS)
def test_samples_follow_the_scheme(group):
    """Kept values are g / q; pair frequencies over 4000 seeded draws match the enumeration."""
    g = torch.tensor(group, dtype=torch.float64)
    n = 4000
    torch.manual_seed(0)
    draws = mvue24(g.expand(n, 4).contiguous(), dim=1)
    q = enumerated_inclusion(group)
    kept = draws != 0
    assert (kept.sum(1) <= 2).all()
    assert not (kept & (g == 0)).any()
    for k in range(4):
        if kept[:, k].any():
            torch.testing.assert_close(
                draws[kept[:, k], k], (g[k] / q[k]).expand(int(kept[:, k].sum()))
            )
    if not (g != 0).any():
        return
    probs = pair_probabilities(group)
    nonzero_pairs = {}
    for (i, j), p in probs.items():
        key = frozenset(k for k in (i, j) if g[k] != 0)
        nonzero_pairs[key] = nonzero_pairs.get(key, 0.0) + p
    seen = {}
    for row in kept:
        key = frozenset(torch.nonzero(row).flatten().tolist())
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) <= set(nonzero_pairs)
    for key, p in nonzero_pairs.items():
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(seen.get(key, 0) / n - p) <= 5 * sigma + 1e-12, (key, p, seen.get(key, 0) / n)


def test_mean_converges_to_dy_and_groups_run_along_dim():
    torch.manual_seed(1)
    g = torch.randn(3, 11, 5, dtype=torch.float64)  # 11 positions: a zero-padded last group
    g[0, :4, 0] = 0.0
    n = 3000
    draws = torch.stack([mvue24(g, dim=1) for _ in range(n)])
    assert all(is_nm(d, dim=1) for d in draws[:20])
    # per entry, the mean of n draws is within 5 standard errors of g
    se = draws.std(0) / n**0.5
    assert ((draws.mean(0) - g).abs() <= 5 * se + 1e-12).all()


def test_seeded_draws_repeat_and_half_precision_works():
    g = torch.randn(4, 16, 8)
    torch.manual_seed(5)
    a = mvue24(g, dim=1)
    torch.manual_seed(5)
    b = mvue24(g, dim=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, mvue24(g, dim=1))
    h = mvue24(g.bfloat16(), dim=1)
    assert h.dtype == torch.bfloat16 and is_nm(h, dim=1) and torch.isfinite(h).all()


def test_strategy_pairs_transposable_weights_with_mvue():
    """Hu et al.: T(W) in Eq. 1, T(W)^T in Eq. 2 (2:4 along out), MVUE(dY) X^T in Eq. 3."""
    plan = fst.STRATEGIES["mvue"]
    assert plan.describe() == {"eq1": "T(W) X", "eq2": "T(W)^T dY", "eq3": "MVUE(dY) X^T"}
    assert all(r.tensor_core(plan) for r in plan.rules)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_linear_with_tokens_is_prefix_dense_plus_mvue_of_the_patches(backend):
    """dW = dY_cls X_cls^T + MVUE(dY_patches) X_patches^T, the draws from the seeded generator."""
    torch.manual_seed(2)
    lin = nn.Linear(6, 8).double()
    w = lin.weight.detach().clone()
    fst.sparsify(lin, "mvue", backend, decay=0.0)
    lin.token_layout = TokenLayout(1, (3, 5))
    x = torch.randn(2, 16, 6, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 16, 8, dtype=torch.float64)
    y = lin(x)
    torch.manual_seed(7)
    y.backward(dy)
    torch.manual_seed(7)
    g = mvue24(dy[:, 1:], dim=1)  # groups of 4 consecutive patches of each sample
    want = torch.einsum("bo,bi->oi", dy[:, 0], x[:, 0]) + torch.einsum("bto,bti->oi", g, x[:, 1:])
    torch.testing.assert_close(lin.weight.grad, want.detach(), atol=1e-10, rtol=1e-8)
    t_w = w * transposable_mask(w)
    torch.testing.assert_close(y, x @ t_w.T + lin.bias)
    torch.testing.assert_close(x.grad, dy @ t_w)


def test_backends_draw_the_same_samples():
    x = torch.randn(2, 5, 9, 7)
    grads = []
    for backend in ("reference", "native"):
        torch.manual_seed(3)
        conv = fst.sparsify(nn.Conv2d(5, 8, 3, padding=1).double(), "mvue", backend)
        y = conv(x.double())
        torch.manual_seed(4)
        y.sum().backward()
        grads.append(conv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


# --- estimator="exact": the minimum-variance 2:4 estimator ---------------------------------


def total_variance(g, q):
    """sum_k g_k^2 (1 / q_k - 1): the variance of keeping g_k / q_k with probability q_k."""
    nz = g != 0
    return float((g[nz] ** 2 * (1 / q[nz] - 1)).sum())


def test_exact_minimum_variance_on_a_hand_computed_group():
    """g = [5, 1, -1, 0.5], |g| sums to 7.5. Exact: c |g_0| = 2 * 5 / 7.5 > 1, so q_0 = 1 and
    c = 1 / (1 + 1 + 0.5) = 0.4: q = [1, 0.4, 0.4, 0.2], variance 25 * 0 + 1 * 1.5 + 1 * 1.5 +
    0.25 * 4 = 4.0. Approx (two draws, p = a / 7.5): q_0 = 2/3 + 5 (p_1/6.5 + p_2/6.5 + p_3/7)
    = 0.91941, q_1 = q_2 = 2/15 + (p_0/2.5 + p_2/6.5 + p_3/7) = 0.43004, q_3 = 1/15 + 0.5
    (p_0/2.5 + p_1/6.5 + p_2/6.5) = 0.22051: variance 5.7257."""
    g = torch.tensor([5.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    q = inclusion_probabilities(g.abs(), estimator="exact")
    torch.testing.assert_close(q, torch.tensor([1.0, 0.4, 0.4, 0.2], dtype=torch.float64))
    assert total_variance(g, q) == pytest.approx(4.0, abs=1e-12)
    qa = inclusion_probabilities(g.abs(), estimator="approx")
    torch.testing.assert_close(qa, enumerated_inclusion(g.tolist()), rtol=1e-12, atol=1e-12)
    assert total_variance(g, qa) == pytest.approx(5.7257, abs=1e-4)
    # the empirical variance of the samples agrees (4000 draws per group)
    torch.manual_seed(0)
    d = mvue24(g.expand(4000, 4).contiguous(), dim=1, estimator="exact")
    assert float(d.var(0).sum()) == pytest.approx(4.0, rel=0.1)


def test_exact_is_no_worse_than_approx_on_random_groups():
    torch.manual_seed(3)
    g = torch.randn(500, 4, dtype=torch.float64)
    qe = inclusion_probabilities(g.abs(), dim=1, estimator="exact")
    qa = inclusion_probabilities(g.abs(), dim=1, estimator="approx")
    torch.testing.assert_close(qe.sum(1), torch.full((500,), 2.0, dtype=torch.float64))
    assert (qe <= 1).all()
    ve = (g**2 * (1 / qe - 1)).sum(1)
    va = (g**2 * (1 / qa - 1)).sum(1)
    assert (ve <= va + 1e-9).all() and (ve < va - 1e-6).any()


@pytest.mark.parametrize("group", GROUPS + [[5.0, 1.0, -1.0, 0.5]])
def test_exact_keeps_at_most_two_and_is_unbiased(group):
    g = torch.tensor(group, dtype=torch.float64)
    n = 6000
    torch.manual_seed(11)
    draws = mvue24(g.expand(n, 4).contiguous(), dim=1, estimator="exact")
    kept = draws != 0
    assert (kept.sum(1) <= 2).all()
    assert (kept.sum(1) == min(2, int((g != 0).sum()))).all()  # exactly 2 when 2+ nonzeros
    assert not (kept & (g == 0)).any()
    q = inclusion_probabilities(g.abs(), estimator="exact")
    for k in range(4):
        if g[k] != 0:  # kept with probability q_k, as g_k / q_k
            assert kept[:, k].double().mean() == pytest.approx(float(q[k]), abs=0.03)
            torch.testing.assert_close(
                draws[kept[:, k], k], (g[k] / q[k]).expand(int(kept[:, k].sum()))
            )
    se = draws.std(0) / n**0.5
    assert ((draws.mean(0) - g).abs() <= 5 * se + 1e-12).all()


def test_exact_estimator_is_a_strategy_option_and_a_config_key():
    plan = get_strategy("mvue", estimator="exact")
    assert plan.estimator == "exact" and fst.STRATEGIES["mvue"].estimator == "approx"
    assert plan.describe()["eq3"] == "MVUE_exact(dY) X^T"
    with pytest.raises(ValueError, match="estimator"):
        get_strategy("mvue", estimator="best")
    with pytest.raises(ValueError, match="no effect"):
        get_strategy("wg", estimator="exact")
    with pytest.raises(ValueError, match="estimator"):
        mvue24(torch.ones(4), estimator="best")
    # a conv trained with it: dW = MVUE_exact(dY) X^T with the same seeded draws
    torch.manual_seed(3)
    conv = fst.sparsify(
        nn.Conv2d(4, 8, 3, padding=1).double(), "mvue", "reference", 0.0, estimator="exact"
    )
    x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    y = conv(x)
    dy = torch.randn_like(y)
    torch.manual_seed(4)
    y.backward(dy)
    torch.manual_seed(4)
    g = mvue24(dy.flatten(2), dim=-1, estimator="exact")
    cols = torch.nn.functional.unfold(x, 3, padding=1)
    want = torch.einsum("nol,nkl->ok", g, cols).reshape(conv.weight.shape)
    torch.testing.assert_close(conv.weight.grad, want)


def test_sparsity_estimator_config_key():
    from fst.engine.config import validate_config
    from fst.types import ConfigError
    from tests.conftest import compose

    validate_config(compose(["sparsity=mvue", "sparsity.estimator=exact"]))
    assert compose(["sparsity=mvue"]).sparsity.estimator == "approx"
    with pytest.raises(ConfigError, match="estimator"):
        validate_config(compose(["sparsity=mvue", "sparsity.estimator=best"]))
