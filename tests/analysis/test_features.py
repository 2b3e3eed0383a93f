import pytest
import torch

from fst.analysis import features


def test_adjacent_difference_and_reconstruction():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0]])
    assert features.adjacent_difference(x).tolist() == [[-1.0, -2.0, -4.0, -8.0, 0.0]]
    assert features.reconstruct(x).tolist() == [[1.0, 1.0, 4.0, 4.0, 16.0]]


def test_horizontally_constant_map_is_perfectly_similar():
    x = torch.randn(2, 3, 8, 1).expand(2, 3, 8, 6)
    s = features.similarity_stats(x)
    assert s["mean_abs_ad"] == 0 and s["rel_err_r"] == pytest.approx(0, abs=1e-6)
    assert s["share_ad_below_0.05"] == 1.0


def test_display_maps_in_unit_range_and_channel_choice():
    x = torch.randn(3, 10, 10)
    x[1] *= 10
    assert features.most_varied_channel(x) == 1
    for m in features.display_maps(x[1]).values():
        assert m.min() >= 0 and m.max() <= 1


def test_plot_features(tmp_path):
    m = {
        "conv": {
            "maps": features.display_maps(torch.randn(8, 8)),
            "stats": features.similarity_stats(torch.randn(1, 8, 8)),
        }
    }
    features.plot_features(torch.rand(3, 16, 16), m, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5_000
