import pytest
import torch

from fst.analysis import timing
from fst.masks import is_nm, nm_mask


@pytest.mark.parametrize(
    "shape,dim", [((8, 16), 1), ((8, 16), 0), ((2, 3, 12), -1), ((4, 8, 5), 1)]
)
def test_naive_sort_mask_matches_nm_mask(shape, dim):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(0))  # continuous: no ties
    m = timing.naive_sort_mask(t, dim)
    assert m.dtype == torch.bool and m.shape == t.shape
    assert torch.equal(m, nm_mask(t, dim))
    assert is_nm(t * m, dim)
    assert int(m.sum()) == t.numel() // 2


def test_naive_sort_mask_keeps_largest_magnitudes():
    t = torch.tensor([[0.1, -5.0, 3.0, 0.2, 1.0, 2.0, -3.0, 0.0]])
    assert timing.naive_sort_mask(t).tolist() == [
        [False, True, True, False, False, True, True, False]
    ]


def test_naive_sort_mask_rejects_ragged_groups():
    with pytest.raises(ValueError, match="multiple of 4"):
        timing.naive_sort_mask(torch.randn(3, 6))


def test_fixed_column_mask_is_2to4_and_keeps_even_indices():
    x = torch.arange(1.0, 17.0).view(2, 8)
    y = timing.fixed_column_mask(x, dim=1)
    assert is_nm(y, 1)
    assert torch.equal(y[:, 0::2], x[:, 0::2]) and not y[:, 1::2].any()


def test_time_fn_reports_seconds():
    r = timing.time_fn(lambda: torch.randn(64, 64) @ torch.randn(64, 64), repeats=3, warmup=1)
    assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["repeats"] == 3


def test_table2_rows_at_batch_one():
    rows = timing.table2(1, repeats=1, warmup=0)
    objects = {(r["object"], r["implementation"]) for r in rows}
    assert ("X^T", "fixed mask (Eq. 7)") in objects and len(rows) == 7
    xt = [r for r in rows if r["object"] == "X^T"][0]
    assert xt["shape"] == "1x576x3136" and all(r["median_s"] > 0 for r in rows)
