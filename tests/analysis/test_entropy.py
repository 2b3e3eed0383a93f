import pytest
import torch

from fst.analysis import entropy


def test_quantize_spans_all_levels():
    x = torch.linspace(-3, 5, 1000)
    q = entropy.quantize(x)
    assert q.min() == 0 and q.max() == 255
    assert torch.equal(
        entropy.quantize(torch.full((4, 4), 2.5)), torch.zeros(4, 4, dtype=torch.long)
    )


def test_quantize_per_channel_uses_each_channel_range():
    x = torch.stack([torch.linspace(0, 1, 64), torch.linspace(0, 100, 64)]).view(2, 8, 8)
    q = entropy.quantize(x, dims=(-2, -1))
    assert torch.equal(q[0], q[1])


def test_constant_image_has_zero_entropy():
    assert entropy.entropy_pair(torch.full((3, 32, 32), 0.7)) == (0.0, 0.0)


def test_iid_uniform_noise_has_8_bits_and_no_neighbour_information():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 224, 224), generator=g).float()
    h, h_cond = entropy.entropy_pair(x)
    assert h == pytest.approx(8.0, abs=0.01)
    # Independent neighbours: conditioning removes nothing.
    assert h_cond == pytest.approx(8.0, abs=0.1)


def test_copied_neighbour_leaves_no_uncertainty():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, 4096, 1), generator=g).float().expand(1, 4096, 6)  # rows constant
    h, h_cond = entropy.entropy_pair(x)
    assert h > 7.5
    assert h_cond == pytest.approx(0.0, abs=1e-9)


def test_two_level_known_entropy_without_correction():
    x = torch.tensor([[0.0, 1.0] * 50])  # pairs alternate: H(X) = 1 bit, X determined by X'
    h, h_cond = entropy.entropy_pair(x, miller_madow=False)
    assert h == pytest.approx(1.0, abs=1e-3) and h_cond == pytest.approx(0.0, abs=1e-9)


def test_layer_entropies_pools_and_spreads():
    g = torch.Generator().manual_seed(0)
    smooth = torch.randn(8, 4, 1, 1, generator=g).expand(8, 4, 64, 64).contiguous()  # constant rows
    noise = torch.rand(8, 4, 64, 64, generator=g)
    rows = entropy.layer_entropies({"smooth": smooth, "noise": noise}, groups=4)
    by = {r["layer"]: r for r in rows}
    assert by["smooth"]["H_X_given_Xadj"] == pytest.approx(0.0, abs=1e-9)
    assert by["noise"]["similarity"] < 0.2 < by["smooth"]["similarity"]
    assert by["noise"]["images"] == 8 and by["noise"]["pairs"] == 8 * 4 * 64 * 63
    assert by["noise"]["H_X_std"] >= 0


def test_too_narrow_map_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        entropy.entropy_pair(torch.randn(4, 1))
