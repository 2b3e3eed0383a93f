"""Masks against brute force: N:M top-n with ties to the lower index, exact transposable masks."""

import itertools

import pytest
import torch

from fst.masks import TRANSPOSABLE_PATTERNS, is_nm, nm_mask, transposable_mask


def brute_nm(t: torch.Tensor, dim: int, n: int, m: int) -> torch.Tensor:
    """Loop over groups; stable sort by -|t| so equal values keep their order (lower index wins)."""
    x = t.movedim(dim, -1)
    flat = x.reshape(-1, x.shape[-1])
    out = torch.zeros_like(flat, dtype=torch.bool)
    for r in range(flat.shape[0]):
        for start in range(0, flat.shape[1], m):
            vals = [abs(float(v)) for v in flat[r, start : start + m]]
            vals += [0.0] * (m - len(vals))  # zero padding of a partial group
            order = sorted(range(m), key=lambda i: -vals[i])  # Python's sort is stable
            for i in order[:n]:
                if start + i < flat.shape[1]:
                    out[r, start + i] = True
    return out.reshape(x.shape).movedim(-1, dim)


@pytest.mark.parametrize(
    "shape,dim",
    [((5, 12), -1), ((5, 13), -1), ((7, 6), 0), ((2, 3, 10), 1), ((3, 4, 5, 6), 2), ((3,), 0)],
)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (2, 8)])
def test_nm_mask_matches_brute_force_with_ties(shape, dim, n, m):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(-2, 3, shape, generator=g).float()  # many ties and zeros
    assert torch.equal(nm_mask(t, dim=dim, n=n, m=m), brute_nm(t, dim, n, m))


def test_nm_mask_random_floats_exactly_half_and_valid():
    t = torch.randn(64, 36)
    mask = nm_mask(t, dim=1)
    assert mask.dtype == torch.bool and mask.shape == t.shape
    assert mask.sum().item() == t.numel() // 2
    assert is_nm(mask, dim=1)
    # keeps the two largest magnitudes of each group
    g = t.abs().reshape(64, 9, 4)
    kept = (g * mask.reshape(64, 9, 4)).sum(-1)
    assert torch.allclose(kept, g.topk(2, dim=-1).values.sum(-1))


def test_nm_mask_ties_go_to_lower_index():
    t = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 5.0, 5.0, 5.0])
    assert nm_mask(t).tolist() == [True, True, False, False] * 2 + [False, True, True, False]


def test_nm_mask_partial_group_and_empty():
    t = torch.tensor([[0.0, -3.0]])  # one partial group: both real entries beat the padding
    assert nm_mask(t).tolist() == [[True, True]]
    assert nm_mask(torch.empty(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match="0 < n <= m"):
        nm_mask(t, n=5, m=4)


def test_is_nm():
    assert is_nm(torch.tensor([1, 0, 1, 0, 0, 0, 3, 2.0]), dim=0)
    assert not is_nm(torch.tensor([1, 1, 1, 0.0]), dim=0)
    w = torch.tensor([[1.0, 2.0], [3.0, 0.0], [4.0, 5.0]])  # dim 0 has one partial group of 3
    assert is_nm(w, dim=1) and not is_nm(w, dim=0)
    assert is_nm(torch.ones(0, 3), dim=1)


def test_transposable_patterns_are_all_90():
    p = TRANSPOSABLE_PATTERNS.reshape(-1, 4, 4)
    assert p.shape[0] == 90 == len({tuple(x.flatten().tolist()) for x in p})
    assert (p.sum(1) == 2).all() and (p.sum(2) == 2).all()
    brute = [
        c
        for c in itertools.product((0, 1), repeat=16)
        if all(sum(c[4 * r : 4 * r + 4]) == 2 for r in range(4))
        and all(sum(c[i::4]) == 2 for i in range(4))
    ]
    assert len(brute) == 90


@pytest.mark.parametrize("shape", [(8, 8), (4, 12), (6, 10), (13, 5)])
def test_transposable_mask_is_optimal_per_block(shape):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g)
    mask = transposable_mask(w)
    assert mask.shape == w.shape and is_nm(mask, dim=0) and is_nm(mask, dim=1)
    pats = TRANSPOSABLE_PATTERNS.reshape(-1, 4, 4)
    a = torch.nn.functional.pad(w.abs(), (0, (-shape[1]) % 4, 0, (-shape[0]) % 4))
    m = torch.nn.functional.pad(mask.float(), (0, (-shape[1]) % 4, 0, (-shape[0]) % 4))
    for i in range(0, a.shape[0], 4):
        for j in range(0, a.shape[1], 4):
            block = a[i : i + 4, j : j + 4]
            best = max(float((block * p).sum()) for p in pats)  # brute force over the 90
            got = float((block * m[i : i + 4, j : j + 4]).sum())
            assert got == pytest.approx(best, rel=1e-6)


def test_transposable_mask_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        transposable_mask(torch.randn(2, 3, 4))


def test_transposable_mask_ignores_autocast():
    """Under bf16 autocast the pattern scores must stay fp32 (the mask is exact TSM)."""
    w = torch.randn(64, 96)
    want = transposable_mask(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(transposable_mask(w), want)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (2, 8)])
def test_compiled_formulation_keeps_the_same_entries(n, m):
    """torch.compile traces masks._keep_ranked (one reduction per entry); eager runs the
    comparison logic. Both keep exactly the brute-force set, ties included."""
    from fst.masks import _groups, _keep_2of4, _keep_rank, _keep_ranked

    g = torch.Generator().manual_seed(1)
    t = torch.randint(-2, 3, (6, 4 * m + 3), generator=g).float().abs()
    groups = _groups(t, 1, m)
    eager = _keep_2of4(groups) if (n, m) == (2, 4) else _keep_rank(groups, n)
    assert torch.equal(_keep_ranked(groups, n), eager)
    compiled = torch.compile(lambda x: nm_mask(x, dim=0, n=n, m=m), backend="aot_eager")
    t2 = torch.randint(-2, 3, (4 * m + 1, 5), generator=g).float()
    assert torch.equal(compiled(t2), brute_nm(t2, 0, n, m))
