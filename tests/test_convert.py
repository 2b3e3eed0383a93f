"""sparsify / densify / summary on real torchvision models."""

import pytest
import torch
import torchvision
from torch import nn

import fst
from fst.layers import SparseConv2d, SparseLinear, sparse_layers


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: stays dense
        nn.Conv2d(8, 8, 1, padding_mode="reflect"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_sparsify_converts_in_place_and_keeps_parameters():
    model = torchvision.models.resnet18(num_classes=10)
    params = {n: p for n, p in model.named_parameters()}
    out = fst.sparsify(model, "fst", "native")
    assert out is model
    assert {n: p for n, p in model.named_parameters()} == params  # same objects
    assert isinstance(model.conv1, SparseConv2d) and isinstance(model.fc, SparseLinear)
    assert len(list(sparse_layers(model))) == 21
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_state_dicts_interchange():
    dense = torchvision.models.resnet18(num_classes=10)
    sparse = fst.sparsify(torchvision.models.resnet18(num_classes=10), "fst")
    sparse.load_state_dict(dense.state_dict())
    dense.load_state_dict(sparse.state_dict())
    assert sparse.state_dict().keys() == dense.state_dict().keys()


def test_densify_reverses():
    model = fst.sparsify(small_net(), "srste")
    x = torch.randn(2, 3, 8, 8)
    fst.densify(model)
    assert not list(sparse_layers(model))
    assert type(model[0]) is nn.Conv2d and type(model[-1]) is nn.Linear
    assert not hasattr(model[0], "plan")
    ref = small_net()
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), ref(x))


def test_exclude_patterns_and_reasons_in_summary():
    model = fst.sparsify(torchvision.models.resnet18(), "fst", exclude=["conv1", "*.downsample.0"])
    rows = {r["name"]: r for r in fst.summary(model).rows}
    assert rows["conv1"]["status"] == "dense" and "conv1" in rows["conv1"]["note"]
    assert rows["layer2.0.downsample.0"]["status"] == "dense"
    assert rows["layer1.0.conv1"]["status"] == "sparse"


def test_exclude_typo_is_an_error():
    with pytest.raises(ValueError, match="match no Conv2d/Linear"):
        fst.sparsify(torchvision.models.resnet18(), "fst", exclude=["fc1"])


def test_grouped_and_reflect_convs_stay_dense_with_reason():
    model = fst.sparsify(small_net(), "fst")
    rows = fst.summary(model).rows
    assert [r["status"] for r in rows] == ["sparse", "dense", "dense", "sparse"]
    assert "depthwise" in rows[1]["note"] and "reflect" in rows[2]["note"]
    text = str(fst.summary(model))
    assert "2/4 layers sparse" in text


def test_summary_reports_padding_and_2of4_checks():
    model = fst.sparsify(torchvision.models.resnet18(num_classes=10), "fst")
    model.eval()(torch.randn(1, 3, 32, 32))
    rows = {r["name"]: r for r in fst.summary(model).rows}
    assert rows["conv1"]["pad_W"] == 1  # 3*7*7 = 147 -> padded to 148
    assert rows["fc"]["pad_WT"] == 2  # 10 output channels -> 12
    assert "ok" in rows["layer1.0.conv1"]["eq1"] and "ok" in rows["layer1.0.conv1"]["eq2"]
    assert "Eq. 3 dense" in rows["fc"]["eq3"]  # 2-D input to the classifier


def test_unknown_strategy_backend_option_list_choices():
    with pytest.raises(KeyError, match="valid choices: .*fst.*srste"):
        fst.sparsify(small_net(), "fts")
    with pytest.raises(KeyError, match="valid choices: native, reference"):
        fst.sparsify(small_net(), "fst", backend="cuda")
    with pytest.raises(TypeError, match="ir_coef"):
        fst.sparsify(small_net(), "fst", ir_coeff=0.5)


def test_sparsify_again_reconfigures():
    model = fst.sparsify(small_net(), "fst")
    fst.sparsify(model, "dense", exclude=["0"])
    assert type(model[0]) is nn.Conv2d
    assert model[-1].strategy == "dense"


def test_strategy_options():
    conv = fst.sparsify(
        nn.Conv2d(8, 8, 3), "fst", ir_coef=0.03, mask_layout="cin", wt_source="pruned"
    )
    assert conv.plan.ir_coef == 0.03 and conv.plan.mask_layout == "cin"
    from fst.masks import is_nm
    from fst.rules import weight_operands

    w_fwd, _ = weight_operands(conv.weight, conv.plan)
    assert is_nm(w_fwd, dim=1)  # groups along Ci at each kernel position


def test_dense_first_conv_weight_keeps_the_eq3_rule_and_its_options():
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3))
    fst.sparsify(net, "fst_released", x_patterns="b", im2col_step=2)
    first, second = net[0].plan, net[1].plan
    assert (first.forward, first.input_grad) == ("dense", "dense")
    assert (second.forward, second.input_grad) == ("nm", "regrouped")
    assert first.rules[2] == second.rules[2]  # X still masked in the first conv's Eq. 3
    assert (first.rules[2].ir_coef, first.x_patterns, first.im2col_step) == (0.03, "b", 2)


def test_summary_of_the_dense_strategy_says_dense():
    model = fst.sparsify(small_net(), "dense")
    summ = fst.summary(model)
    assert {r["status"] for r in summ.rows} == {"dense"}
    rows = {r["name"]: r for r in summ.rows}
    assert "prunes no GEMM" in rows["0"]["note"] and "prunes no GEMM" in rows["6"]["note"]
    assert summ.num_sparse == 0 and str(summ).endswith(f"0/{len(summ.rows)} layers sparse")


@pytest.mark.parametrize(
    "strategy, headline",
    [
        ("fst", "2/4 layers sparse (fst/native)"),
        ("dense", "0/4 layers sparse (dense/native)"),
        # SR-STE's Eq. 2 operand S(W)^T is half zeros along K, not along Co (the reduction dim)
        ("srste", "2/4 layers sparse (srste/native); 2 with a pruned operand not 2:4 along"),
    ],
)
def test_summary_headline_is_one_line(strategy, headline):
    """Issue 14 item 12: logs get one line; the table goes to the run dir."""
    text = fst.summary(fst.sparsify(small_net(), strategy)).headline()
    assert text.startswith(headline) and "\n" not in text
    assert fst.summary(small_net()).headline() == "0/4 layers sparse"  # not sparsified
