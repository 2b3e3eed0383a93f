"""Every default of the typed config groups is written once: the YAML group files agree with
the dataclasses of ``fst.engine.config`` (the one definition the engine reads)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fst.engine.config import LoggerConfig, LossConfig, TrainerConfig, WandbConfig
from tests.conftest import CONFIGS
from tests.conftest import compose as compose_run


def _group_file(name: str) -> dict[str, Any]:
    """``configs/<group>/<option>.yaml`` composed by Hydra on its own (the group's keys)."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(name)
    return OmegaConf.to_container(cfg[name.split("/")[0]], resolve=True)


def _defaults(schema: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(schema):
        has_factory = f.default_factory is not dataclasses.MISSING
        out[f.name] = f.default_factory() if has_factory else f.default
    return out


def _drift(yaml: dict[str, Any], schema: type, where: str) -> list[str]:
    """Keys of ``yaml`` whose value differs from ``schema``'s default, and keys either side
    lacks."""
    typed = _defaults(schema)
    out = [f"{where}.{k}: only in the YAML" for k in yaml if k not in typed]
    out += [f"{where}.{k}: not in the YAML" for k in typed if k not in yaml]
    for k in (k for k in typed if k in yaml):  # the dataclass's order
        a, b = yaml[k], typed[k]
        if not (a == b and type(a) is type(b) or (isinstance(b, float) and a == b)):
            out.append(f"{where}.{k}: YAML {a!r} vs {schema.__name__} {b!r}")
    return out


def test_trainer_yaml_defaults_are_the_dataclass_defaults():
    assert _drift(_group_file("trainer/default"), TrainerConfig, "trainer") == []


@pytest.mark.parametrize("option", ["wandb", "none"])
def test_logger_yaml_defaults_are_the_dataclass_defaults(option):
    yaml = _group_file(f"logger/{option}")
    wandb = yaml.pop("wandb")
    typed = _defaults(LoggerConfig)
    assert yaml == {k: v for k, v in typed.items() if k != "wandb"}
    if option == "none":
        assert wandb is None and typed["wandb"] is None
    else:
        assert _drift(wandb, WandbConfig, "logger.wandb") == []


def test_loss_defaults_in_the_primary_config_are_the_dataclass_defaults():
    loss = OmegaConf.to_container(compose_run().loss)
    assert _drift(loss, LossConfig, "loss") == []


def test_a_drifted_default_is_reported():
    yaml = _group_file("trainer/default")
    yaml["precision"] = "32"  # validate.py once defaulted to "32", config.py to "bf16"
    yaml["compile"] = None
    del yaml["epochs"]
    assert _drift(yaml, TrainerConfig, "trainer") == [
        "trainer.epochs: not in the YAML",
        "trainer.precision: YAML '32' vs TrainerConfig 'bf16'",
        "trainer.compile: YAML None vs TrainerConfig False",
    ]
