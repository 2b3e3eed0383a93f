"""The sparsifier API: optimizer-like state_dict round trip, strategy checks, clear errors."""

import copy

import pytest
import torch
from torch import nn

import fst
from fst.sparsifier import SPARSIFIERS
from fst.strategies import STRATEGIES, Strategy

STATEFUL = sorted(k for k, s in STRATEGIES.items() if s.sparsifier)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(), nn.Linear(256, 16))


def _train(net, sp, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(2, 16, 4, 4, generator=g)).square().mean().backward()
        opt.step()
        sp.step()


def test_every_stateful_strategy_names_a_registered_sparsifier():
    assert STATEFUL == ["asfp", "asp", "dpf", "resprop", "rigl"]
    for key in STATEFUL:
        plan = STRATEGIES[key]
        needed = {k for r in plan.rules for k in r.state_keys}
        assert needed <= set(SPARSIFIERS.get(plan.sparsifier).provides)
    assert not STRATEGIES["meprop"].sparsifier and not STRATEGIES["fst"].stateful


@pytest.mark.parametrize("key", STATEFUL)
def test_state_dict_round_trip_continues_identically(key):
    """Masks keyed by parameter name; a fresh sparsifier loaded from the state_dict (plus the
    same weights and optimizer state) continues exactly like the original."""
    kw = dict(total_steps=8, steps_per_epoch=2)
    sched = {"dpf": dict(update_every=2), "rigl": dict(update_every=2, end=1.0)}.get(key, {})
    nets = [_net(), _net()]
    for n in nets:
        fst.sparsify(n, key)
    opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in nets]
    sps = [fst.build_sparsifier(n, o, seed=3, **kw, **sched) for n, o in zip(nets, opts)]
    _train(nets[0], sps[0], opts[0], 3)
    sd = sps[0].state_dict()
    dense_linear = STRATEGIES[key].dense_linear  # asfp, resprop: Linear layers stay dense
    assert set(sd["state"]) == ({"0.weight"} if dense_linear else {"0.weight", "2.weight"})
    nets[1].load_state_dict(nets[0].state_dict())
    opts[1].load_state_dict(copy.deepcopy(opts[0].state_dict()))
    sps[1].load_state_dict(sd)
    assert sps[1].state["0.weight"] is nets[1][0].rule_state  # the layer reads the same dict
    for i in range(2):
        _train(nets[i], sps[i], opts[i], 4, seed=2)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    for name in sd["state"]:
        for k, v in sps[0].state[name].items():
            w = sps[1].state[name][k]
            assert torch.equal(v, w) if torch.is_tensor(v) else v == w, (name, k)


def test_state_dict_loads_with_weights_only(tmp_path):
    net = _net()
    fst.sparsify(net, "rigl")
    sp = fst.build_sparsifier(net, total_steps=4, steps_per_epoch=2)
    torch.save(sp.state_dict(), tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    assert torch.equal(loaded["state"]["2.weight"]["mask"], sp.state["2.weight"]["mask"])


def test_stateless_strategies_have_no_sparsifier_and_no_layer_state():
    net = fst.sparsify(_net(), "fst")
    assert fst.build_sparsifier(net) is None
    assert all(m.rule_state is None for _, m in fst.layers.sparse_layers(net))
    with pytest.raises(ValueError, match="keeps no state"):
        fst.build_sparsifier(net, update_every=3)


def test_unknown_schedule_parameter_names_the_valid_ones():
    net = fst.sparsify(_net(), "dpf")
    with pytest.raises(ValueError, match="no parameter.*dense_epochs.*ramp_end, target"):
        fst.build_sparsifier(net, dense_epochs=1)


def test_forgetting_the_sparsifier_fails_with_the_fix():
    net = fst.sparsify(_net(), "dpf")
    assert "sparsifier 'dpf': not attached yet" in str(fst.summary(net))
    with pytest.raises(RuntimeError, match="build the strategy's sparsifier"):
        net(torch.randn(1, 16, 4, 4))
    fst.build_sparsifier(net, total_steps=4)
    assert "M(W) X [unstructured, 0% zero" in str(fst.summary(net))


def test_stateful_rule_without_sparsifier_is_refused():
    with pytest.raises(ValueError, match="read per-layer state.*name the sparsifier"):
        Strategy("bad", forward="held")


def test_load_refuses_another_model_or_method():
    a = fst.sparsify(_net(), "dpf")
    sd = fst.build_sparsifier(a, total_steps=4).state_dict()
    b = fst.sparsify(nn.Sequential(nn.Conv2d(16, 16, 3)), "dpf")
    with pytest.raises(ValueError, match="does not fit the model's layers"):
        fst.build_sparsifier(b, total_steps=4).load_state_dict(sd)
    c = fst.sparsify(_net(), "rigl")
    with pytest.raises(ValueError, match="'dpf' cannot load into 'rigl'"):
        fst.build_sparsifier(c, total_steps=4).load_state_dict(sd)


def test_asp_without_a_sparse_phase_is_refused():
    net = fst.sparsify(_net(), "asp")
    with pytest.raises(ValueError, match="dense_epochs=4 leaves no sparse phase"):
        fst.build_sparsifier(net, total_steps=8, steps_per_epoch=2, dense_epochs=4)


def test_rigl_keeps_the_first_layer_dense_by_default():
    net = fst.sparsify(_net(), "rigl")
    sp = fst.build_sparsifier(net, total_steps=4, steps_per_epoch=2)
    assert bool(sp.state["0.weight"]["mask"].all())
    assert int((~sp.state["2.weight"]["mask"]).sum()) == 256 * 16 // 2


def test_every_stateful_strategy_has_a_sparsifier_providing_its_state():
    from fst.sparsifier import SPARSIFIERS
    from fst.strategies import STRATEGIES

    for key, plan in STRATEGIES.items():
        needed = {k for r in plan.rules for k in r.state_keys}
        if plan.sparsifier:
            assert needed <= set(SPARSIFIERS.get(plan.sparsifier).provides), key
        else:
            assert not needed, key
