"""The GEMM rules: what each plan's GEMMs prune, their checks, options, and extension by a rule."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fst
from fst.masks import is_nm, nm_mask
from fst.rules import (
    FORWARD_RULES,
    INPUT_GRAD_RULES,
    WEIGHT_GRAD_RULES,
    operand_checks,
    weight_operands,
)
from fst.rules.base import register
from fst.rules.weight_grad import WeightGradRule
from fst.strategies import STRATEGIES, Strategy


def test_every_strategy_names_registered_rules():
    for key, plan in STRATEGIES.items():
        eq1, eq2, eq3 = plan.rules
        assert (eq1.eq, eq2.eq, eq3.eq) == (1, 2, 3), key
        assert eq1 is FORWARD_RULES[plan.forward] and eq2 is INPUT_GRAD_RULES[plan.input_grad]
        assert eq3 is WEIGHT_GRAD_RULES[plan.weight_grad]
        assert set(plan.describe()) == {"eq1", "eq2", "eq3"}


@pytest.mark.parametrize("key", ["srste", "tsm", "fst", "fst_released", "gg"])
def test_operand_checks_follow_the_reduction_dims(key):
    torch.manual_seed(0)
    w = torch.randn(12, 6, 3, 3)
    plan = STRATEGIES[key]
    checks = {c.eq: c for c in operand_checks(plan, *weight_operands(w, plan))}
    assert checks[1].along == "Ci*kh*kw" and checks[1].tensor_core and checks[1].ok()
    if key in ("tsm", "fst"):
        assert checks[2].along == "Co" and checks[2].tensor_core and checks[2].ok()
    elif key in ("srste", "fst_released"):
        # S(W)^T and the regrouped weight: pruned, but not 2:4 along Co
        assert not checks[2].tensor_core and not checks[2].ok()
        assert checks[2].valid_share() < 1.0
    else:  # gg prunes dY in Eq. 2, not the weight
        assert 2 not in checks


def test_ignored_option_is_refused_naming_it():
    with pytest.raises(ValueError, match="ir_coef=0.5 has no effect with strategy 'srste'"):
        fst.sparsify(nn.Conv2d(4, 4, 3), "srste", ir_coef=0.5)
    with pytest.raises(ValueError, match="x_pattern"):
        fst.sparsify(nn.Conv2d(4, 4, 3), "wg", x_pattern="random4")
    # an unread option equal to the plan's own value changes nothing and is accepted
    fst.sparsify(nn.Conv2d(4, 4, 3), "srste", ir_coef=0.0, x_pattern="fixed")
    # options a rule of the plan reads are fine, also after switching the rule in the same call
    fst.sparsify(nn.Conv2d(4, 4, 3), "fst", x_pattern="random4", x_patterns="b", im2col_step=2)


def test_option_switches_keep_rule_and_option_in_step():
    released = STRATEGIES["fst_released"]
    assert (released.weight_grad, released.x_pattern) == ("random4", "random4")
    assert (released.input_grad, released.wt_source) == ("regrouped", "pruned")
    paper = released.with_options(x_pattern="fixed", wt_source="dense")
    assert (paper.weight_grad, paper.input_grad) == ("fixed", "nm_wt")
    assert paper.describe()["eq3"] == "(dY + 0.03*shift(dY)) F(X^T)"
    with pytest.raises(ValueError, match="x_pattern='roll'"):
        released.with_options(x_pattern="roll")


def test_unknown_rule_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="weight_grad='nm_xx'; valid: dense, fixed"):
        Strategy("bad", forward="nm", weight_grad="nm_xx")


class _FirstOfPair(WeightGradRule):
    """A toy Eq. 3 mode: keep X at positions 0, 1 of every 4 (a fixed 2:4 pattern)."""

    key = "test_first_pair"
    operand = "X^T"
    prunes_x = True

    def formula(self, plan):
        return "dY P(X^T)"

    def tensor_core(self, plan):
        return True

    def operands(self, dy, x, plan, dim=-1, width=None):
        n = x.shape[dim]
        keep = (torch.arange(n) % 4 < 2).to(x.dtype)
        shape = [1] * x.dim()
        shape[dim] = n
        return dy, x * keep.view(shape)


@pytest.fixture
def toy_rule():
    register(_FirstOfPair)
    yield WEIGHT_GRAD_RULES[_FirstOfPair.key]
    WEIGHT_GRAD_RULES.unregister(_FirstOfPair.key)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_a_new_rule_runs_on_every_backend_without_touching_them(toy_rule, backend):
    """Adding a GEMM mode = one rule class: both backends run it, and summary reports it."""
    plan = Strategy("toy", forward="nm", input_grad="nm_wt", weight_grad=toy_rule.key)
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 8, 3, 2, 1).double()
    x = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    w = conv.weight.detach().clone()
    fst.sparsify(conv, plan, backend, decay=0.0)
    y = conv(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    cols = F.unfold(x, 3, 1, 1, 2)  # [N, K, L]
    keep = (torch.arange(cols.shape[2]) % 4 < 2).double()
    want = torch.einsum("nol,nkl->ok", dy.flatten(2), cols * keep).view_as(w)
    torch.testing.assert_close(conv.weight.grad, want)
    assert fst.summary(conv).rows[0]["eq3"] == "dY P(X^T)"


def test_srste_eq2_weight_is_the_forward_weight():
    torch.manual_seed(2)
    w = torch.randn(8, 4, 3, 3)
    w_fwd, w_bwd = weight_operands(w, STRATEGIES["srste"])
    assert torch.equal(w_fwd, w_bwd)
    assert is_nm(w_fwd.reshape(8, -1), dim=1)
    want = w.reshape(8, -1) * nm_mask(w.reshape(8, -1), dim=1)
    assert torch.equal(w_fwd.reshape(8, -1), want)
