import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet18

from fst.analysis import macs
from fst.strategies import STRATEGIES


def _conv_flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if "convolution" in str(op))


def test_one_layer_matches_flop_counter():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    layers = macs.conv_gemms(conv, (2, 8, 10, 10))
    (row,) = macs.dense_macs(layers, first_input_grad=True)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    # FlopCounterMode counts 2 FLOPs per MAC.
    assert _conv_flops(conv, x) == 2 * (row["eq1"] + row["eq2"] + row["eq3"])
    assert row["eq1"] == row["eq2"] == row["eq3"] == 2 * 16 * 8 * 9 * 5 * 5


def test_resnet18_matches_flop_counter_without_first_input_grad():
    model = resnet18(num_classes=10)
    layers = macs.conv_gemms(model, (2, 3, 32, 32))
    assert len(layers) == 20 and layers[0].name == "conv1" and layers[-1].name == "layer4.1.conv2"
    rows = macs.dense_macs(layers)
    assert rows[0]["eq2"] == 0  # the image needs no gradient
    total = sum(r["eq1"] + r["eq2"] + r["eq3"] for r in rows)
    assert _conv_flops(model.train(), torch.randn(2, 3, 32, 32)) == 2 * total


# Which of Eq. 1-3 have a 2:4 operand (from the paper: Eq. 4, Tables 3 and 5).
EXPECTED = {
    "dense": (False, False, False),
    "srste": (True, False, False),
    "tsm": (True, True, False),
    "fst2": (True, True, False),
    "fst_noir": (True, True, True),
    "fst": (True, True, True),
    "wg": (True, True, True),
    "wx": (True, True, True),
    "gg": (True, True, True),
    "gx": (True, True, True),
    # Table 3's other baselines: unstructured / channel sparsity is not 2:4 (counts dense);
    # ASP's one-shot mask is 2:4 along Ci, its S_fix(W)^T is not 2:4 along Co.
    "meprop": (False, False, False),
    "resprop": (False, False, False),
    "dpf": (False, False, False),
    "rigl": (False, False, False),
    "asfp": (False, False, False),
    "asp": (True, False, False),
}


if "fst_released" in STRATEGIES:
    # Its Eq. 2 weight is S(W) regrouped inside one filter: not 2:4 along Cout.
    EXPECTED["fst_released"] = (True, False, True)
if "mvue" in STRATEGIES:
    # T(W) for Eq. 1 and 2, MVUE(dY): at most 2 of 4 consecutive positions for Eq. 3.
    EXPECTED["mvue"] = (True, True, True)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sparse_equations_from_registry(name):
    assert macs.strategy_sparse_eqs(name) == EXPECTED[name]


def test_every_registered_strategy_is_counted():
    layers = macs.conv_gemms(resnet18(), (1, 3, 64, 64))
    rows = {r["strategy"]: r for r in macs.macs_by_strategy(layers, list(STRATEGIES))}
    assert set(rows) == set(STRATEGIES) == set(EXPECTED)
    assert rows["dense"]["speedup_bound"] == 1.0
    assert rows["fst"]["fraction_of_dense"] == pytest.approx(0.5)
    # SR-STE's only 2:4 GEMM is the forward one, so the backward pass dominates (paper: up to
    # 80%); its Eq. 2 uses S(W)^T, pruned but not 2:4 along Cout, so it counts dense.
    assert rows["srste"]["backward_share"] > 0.75
    assert (rows["srste"]["pruned_eqs"], rows["srste"]["sparse_eqs"]) == ("12", "1")
    # pruned, but nothing a sparse tensor core runs: the dense count
    for key, pruned in (("meprop", "23"), ("resprop", "23"), ("dpf", "12"), ("asfp", "1")):
        assert (rows[key]["pruned_eqs"], rows[key]["sparse_eqs"]) == (pruned, "-"), key
        assert rows[key]["total"] == rows["dense"]["total"]
    # ASP halves Eq. 1 except in the 3-channel stem, which apex leaves dense
    dense = macs.dense_macs(layers)
    assert rows["asp"]["eq1"] == dense[0]["eq1"] + sum(r["eq1"] for r in dense[1:]) / 2


def test_exclude_keeps_layers_dense():
    layers = macs.conv_gemms(resnet18(), (1, 3, 32, 32))
    rows = macs.effective_macs(layers, (True, True, True), exclude=("conv1", "*.downsample.0"))
    dense = macs.dense_macs(layers)
    for r, d in zip(rows, dense):
        kept = r["name"] == "conv1" or r["name"].endswith("downsample.0")
        assert (r["eq1"] == d["eq1"]) == kept
        assert r["eq3"] == (d["eq3"] if kept else d["eq3"] / 2)


def test_no_conv_is_an_error():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        macs.conv_gemms(nn.Linear(4, 4), (1, 4))


def test_plot_writes_png(tmp_path):
    layers = macs.conv_gemms(resnet18(), (1, 3, 32, 32))
    per_s = macs.macs_by_strategy(layers, ["dense", "fst"])
    macs.plot_macs(macs.dense_macs(layers), per_s, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
