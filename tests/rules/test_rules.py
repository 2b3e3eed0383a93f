"""The GEMM rules: what each plan's GEMMs prune, their checks, options, and extension by a rule."""

import ast
import dataclasses
from pathlib import Path

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
from fst.rules.base import option, register
from fst.rules.forward import NM
from fst.rules.weight_grad import Fixed, WeightGradRule
from fst.strategies import OPTIONS, STRATEGIES, Strategy, get_strategy


def test_every_strategy_names_registered_rules():
    for key, plan in STRATEGIES.items():
        eq1, eq2, eq3 = plan.rules
        assert (eq1.eq, eq2.eq, eq3.eq) == (1, 2, 3), key
        # the registered rules (with the plan's options: instances of the registered classes)
        assert type(eq1) is type(FORWARD_RULES[plan.forward]), key
        assert type(eq2) is type(INPUT_GRAD_RULES[plan.input_grad]), key
        assert type(eq3) is type(WEIGHT_GRAD_RULES[plan.weight_grad]), key
        assert set(plan.describe()) == {"eq1", "eq2", "eq3"}


def test_rules_own_their_options():
    fst_plan, noir = STRATEGIES["fst"], STRATEGIES["fst_noir"]
    assert fst_plan.rules[2] == Fixed(ir_coef=1.0) and noir.rules[2] == Fixed(ir_coef=0.0)
    assert fst_plan.rules[2].kept_half(fst_plan) == 1.0 and fst_plan.ir_coef == 1.0
    assert STRATEGIES["asp"].rules[0].mask_layout == "cin" == STRATEGIES["asp"].mask_layout
    # an option goes to the rule that declares it (both of meProp's rules read dy_ratio)
    meprop = get_strategy("meprop", dy_ratio=0.25)
    assert [getattr(r, "dy_ratio", None) for r in meprop.rules] == [None, 0.25, 0.25]
    assert STRATEGIES["meprop"].dy_ratio == 0.5  # registry entries are unchanged
    # keys + options and rule objects build the same plan; plans hash and compare by value
    by_objects = Strategy("fst", NM(), INPUT_GRAD_RULES["nm_wt"], Fixed(ir_coef=1.0))
    assert by_objects == fst_plan and hash(by_objects) == hash(fst_plan)
    with pytest.raises(ValueError, match="ir_coef=0.5 has no effect"):
        Strategy("x", forward="nm", ir_coef=0.5)
    with pytest.raises(ValueError, match="mask_layout='rows'; valid"):
        NM(mask_layout="rows")
    with pytest.raises(ValueError, match="is not an Eq. 1 rule"):
        Strategy("x", forward=Fixed())
    with pytest.raises(dataclasses.FrozenInstanceError):
        fst_plan.rules[2].ir_coef = 0.5
    assert "ir_coef" in OPTIONS and "x_pattern" in OPTIONS and "coefficient" in OPTIONS["ir_coef"]


def test_rules_do_not_import_strategies():
    """Strategies are built from rules: no module of fst.rules imports fst.strategies."""
    for path in Path(fst.rules.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(n and n.startswith("fst.strategies") for n in names), path.name


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


class _KeepFirst(WeightGradRule):
    """A toy Eq. 3 mode with an option: keep X at the first ``keep`` positions of every 4."""

    key = "test_keep_first"
    operand = "X^T"
    prunes_x = True
    keep: int = option(2, "test_keep_first: positions of every 4 kept", choices=(1, 2))

    def formula(self, plan):
        return f"dY P{self.keep}(X^T)"

    def operands(self, dy, x, plan, dim=-1, width=None):
        keep = (torch.arange(x.shape[dim]) % 4 < self.keep).to(x.dtype)
        shape = [1] * x.dim()
        shape[dim] = -1
        return dy, x * keep.view(shape)


def test_a_new_rules_option_is_a_strategy_option():
    """A rule's option needs no entry anywhere else: OPTIONS lists it, plans route it."""
    assert "keep" not in OPTIONS
    register(_KeepFirst)
    try:
        assert OPTIONS["keep"] == "test_keep_first: positions of every 4 kept"
        plan = Strategy("toy", forward="nm", weight_grad="test_keep_first", keep=1)
        assert plan.rules[2] == _KeepFirst(keep=1) and plan.describe()["eq3"] == "dY P1(X^T)"
        assert get_strategy(plan, keep=2).rules[2].keep == 2
        with pytest.raises(ValueError, match="keep=3; valid"):
            plan.with_options(keep=3)
        with pytest.raises(ValueError, match="keep=1 has no effect with strategy 'fst'"):
            get_strategy("fst", keep=1)
        conv = fst.sparsify(nn.Conv2d(4, 4, 3), plan, "reference", decay=0.0)
        y = conv(torch.randn(1, 4, 6, 6))
        y.sum().backward()
        assert conv.weight.grad is not None
    finally:
        WEIGHT_GRAD_RULES.unregister(_KeepFirst.key)
    assert "keep" not in OPTIONS


def test_srste_eq2_weight_is_the_forward_weight():
    torch.manual_seed(2)
    w = torch.randn(8, 4, 3, 3)
    w_fwd, w_bwd = weight_operands(w, STRATEGIES["srste"])
    assert torch.equal(w_fwd, w_bwd)
    assert is_nm(w_fwd.reshape(8, -1), dim=1)
    want = w.reshape(8, -1) * nm_mask(w.reshape(8, -1), dim=1)
    assert torch.equal(w_fwd.reshape(8, -1), want)
