"""The run config is typed once, at the top: one strategy lookup per run, and the typed objects
(not the raw config) reach the model, the sparsifier and the trainer."""

from __future__ import annotations

import pytest

from fst.engine import config as run_config
from fst.engine.config import resolve_config, validate_config
from fst.engine.training import train
from fst.registry import Registry
from fst.strategies import STRATEGIES
from tests.conftest import SHRINK, TINY_DIGITS, compose


@pytest.mark.parametrize("sparsity", ["fst", "dpf"])  # stateless; with a sparsifier
def test_the_strategy_registry_is_consulted_once_per_run(sparsity, tmp_path, monkeypatch):
    lookups = []
    get = Registry.get

    def counting_get(self, name):
        if self is STRATEGIES:
            lookups.append(name)
        return get(self, name)

    monkeypatch.setattr(Registry, "get", counting_get)
    monkeypatch.setattr(Registry, "__getitem__", counting_get)
    monkeypatch.setattr(run_config, "_RESOLVED_SPARSITY", {})  # a fresh process
    cfg = compose([*SHRINK, *TINY_DIGITS, f"sparsity={sparsity}", "trainer.limit_train_batches=1"])
    validate_config(cfg)  # train.py's check before Hydra starts (fst.engine.launch)
    summary = train(cfg, run_dir=tmp_path)
    assert summary["steps"] == 1 and summary["strategy"] == sparsity
    assert lookups == [sparsity]


def test_sparsity_options_and_schedule_are_separate():
    run = resolve_config(compose(["+sparsity.ir_coef=0.03"]))
    assert run.sparsity.options == {"ir_coef": 0.03} and run.sparsity.schedule == {}
    assert run.sparsity.strategy.name == "fst"
    run = resolve_config(compose(["sparsity=asp", "sparsity.dense_epochs=1"]))
    assert run.sparsity.options == {} and run.sparsity.schedule == {"dense_epochs": 1}
    assert run.backend.name == "native" and run.backend.impl is not None
