"""The Hydra config tree: every file composes, validates, and names a registry entry."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fst.engine.config import ConfigError, normalize_overrides, resolve_config, validate_config
from tests.conftest import CONFIGS, compose

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONFIGS / "sweep").glob("*.yaml"))


def test_default_config_validates():
    cfg = compose()
    validate_config(cfg)
    assert (cfg.task, cfg.model.name, cfg.data.name) == ("classification", "resnet18", "digits")
    assert (cfg.sparsity.strategy, cfg.backend.name) == ("fst", "native")
    assert cfg.model.small_stem is True and cfg.data.image_size == 32
    assert cfg.logger.wandb.mode == "offline"


def test_experiment_both_spellings():
    # Users type `+experiment=NAME` (lightning-hydra-template habit); Hydra itself only takes
    # `experiment=NAME` because `experiment: null` is in the defaults list.
    a = compose(["+experiment=fst_resnet18"])
    b = compose(["experiment=fst_resnet18"])
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name):
    cfg = compose([f"+experiment={name}"])
    if name.startswith(("fst_resnet", "table1_", "table3_", "table5_resnet")):
        assert cfg.name == name  # the paper's rows: run name = file stem (tables key on it)
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = "/nonexistent"  # validate_config checks keys and names, not paths
    validate_config(cfg)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_files_name_their_runs(name):
    """Every experiment file sets ``name`` itself (the default would be data_model_strategy)."""
    cfg = compose([f"+experiment={name}"])
    label = OmegaConf.select(cfg, "model.label", default=None) or cfg.model.name
    assert cfg.name != f"{cfg.data.name}_{label}_{cfg.sparsity.strategy}"
    assert "${" not in str(cfg.name)


@pytest.mark.parametrize(
    "overrides, name",
    [
        ([], "digits_resnet18_fst"),
        (["model=resnet50", "sparsity=dense"], "digits_resnet50_dense"),
        (["model=timm", "model.arch=convnext_tiny"], "digits_timm-convnext_tiny_fst"),
        (
            ["model=timm", "model.arch=test_vit", "data=digits_hard"],
            "digits_hard_timm-test_vit_fst",
        ),
        (
            ["model=vit", "model.arch=deit_small_patch16_224"],
            "digits_vit-deit_small_patch16_224_fst",
        ),
        (["model=timm", "model.label=tiny"], "digits_tiny_fst"),  # the label is a setting
        (["model=timm", "name=mine"], "mine"),  # and the name stays overridable
    ],
)
def test_default_run_name_names_the_architecture(overrides, name):
    """Issue 14 item 11: timm runs were all named digits_timm_fst, whatever the architecture."""
    cfg = compose(overrides)
    assert cfg.name == name
    validate_config(cfg)  # model.label is a known model-group key, not a builder argument


def test_model_label_is_not_passed_to_the_builder():
    from fst.tasks import TASKS

    cfg = compose(["model=timm", "model.arch=test_resnet", "model.num_classes=10"])
    model = TASKS.get("classification")(resolve_config(cfg)).build_model()
    assert model.num_classes == 10


@pytest.mark.parametrize("name", ["fst_resnet18", "fst_resnet50"])
def test_paper_recipe(name):
    cfg = compose([f"+experiment={name}"])
    assert cfg.model.name == name.split("_")[1]
    assert cfg.data.name == "imagenet" and OmegaConf.is_missing(cfg.data, "root")
    assert cfg.optim.name == "sgd" and cfg.optim.momentum == 0.9 and cfg.optim.lr == 0.1
    assert cfg.optim.weight_decay == 7e-5 and cfg.loss.label_smoothing == 0.1
    assert cfg.data.batch_size == 256 and cfg.trainer.epochs == 120
    assert cfg.sched.name == "cosine" and cfg.sched.min_lr == 0.0 and cfg.sched.warmup_epochs == 0
    assert cfg.sparsity.strategy == "fst" and cfg.sparsity.decay == 2e-4
    assert list(cfg.sparsity.exclude) == []  # the paper prunes every layer
    assert cfg.model.small_stem is False and cfg.data.image_size == 224


TABLE3_BASELINES = {"resnet18": ["meprop", "resprop", "asfp", "asp"],
                    "resnet50": ["dpf", "rigl", "asfp", "asp"]}  # fmt: skip


@pytest.mark.parametrize(
    "table, rows",
    [
        ("table1", {"resnet18": ["dense", "wg", "wx", "gg", "gx"]}),
        (
            "table3",
            {
                m: ["dense", "srste", "tsm", "fst2", "fst", *TABLE3_BASELINES[m]]
                for m in ("resnet18", "resnet50")
            },
        ),
        ("table5", {"resnet18": ["dense", "srste", "fst2", "fst_noir", "fst"]}),
    ],
)
def test_table_rows_and_sweeps(table, rows):
    for m, strategies in rows.items():
        for s in strategies:
            cfg = compose([f"+experiment={table}_{m}_{s}"])
            assert (cfg.model.name, cfg.sparsity.strategy) == (m, s)
            assert cfg.optim.weight_decay == 7e-5 and cfg.trainer.epochs == 120
            if s in TABLE3_BASELINES.get(m, []):  # SR-STE's decay is no part of them
                assert cfg.sparsity.decay == 0.0
    sweep = compose([f"+sweep={table}"], config_name="config")
    hydra_cfg = _hydra_cfg([f"+sweep={table}"])
    params = hydra_cfg.hydra.sweeper.params
    swept = params["experiment"].split(",")
    assert sorted(swept) == sorted(f"{table}_{m}_{s}" for m, ss in rows.items() for s in ss)
    assert len(params["seed"].split(",")) >= 2  # seeds are part of the sweep
    assert sweep.name  # the sweep file itself composes


def _hydra_cfg(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return hydra_compose(
            "config", overrides=normalize_overrides(overrides), return_hydra_config=True
        )


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_names_existing_experiments(name):
    params = _hydra_cfg([f"+sweep={name}"]).hydra.sweeper.params
    assert "seed" in params
    swept = [e.strip() for e in str(params.get("experiment", "")).split(",") if e.strip()]
    for exp in swept:
        assert exp in EXPERIMENTS, f"sweep {name} names missing experiment {exp}"


def test_group_files_match_registries():
    import fst
    from fst.data import DATASETS
    from fst.engine.optim import OPTIMIZERS, SCHEDULERS
    from fst.models import MODELS

    for p in (CONFIGS / "sparsity").glob("*.yaml"):
        assert OmegaConf.load(p).strategy == p.stem
    assert {p.stem for p in (CONFIGS / "sparsity").glob("*.yaml")} >= {
        "dense", "srste", "tsm", "fst2", "fst_noir", "fst", "wg", "wx", "gg", "gx"
    }  # fmt: skip
    assert {p.stem for p in (CONFIGS / "sparsity").glob("*.yaml")} <= set(fst.STRATEGIES)
    for group, reg in (("backend", fst.BACKENDS), ("model", MODELS), ("data", DATASETS)):
        for p in (CONFIGS / group).glob("*.yaml"):
            assert OmegaConf.load(p).name == p.stem and p.stem in reg
    for group, reg in (("optim", OPTIMIZERS), ("sched", SCHEDULERS)):
        for p in (CONFIGS / group).glob("*.yaml"):
            assert OmegaConf.load(p).name == p.stem and p.stem in reg


def test_normalize_overrides():
    assert normalize_overrides(["+experiment=a", "+sweep=b", "+foo=1", "x=2"]) == [
        "experiment=a",
        "sweep=b",
        "+foo=1",
        "x=2",
    ]


def test_misspelt_cli_key_fails_before_training():
    with pytest.raises(ConfigCompositionException, match="epoch"):
        compose(["trainer.epoch=3"])


def test_unknown_strategy_group_lists_choices():
    with pytest.raises(ConfigCompositionException, match="fst_noir"):
        compose(["sparsity=fsst"])


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("sparsity.strategy", "fsst", r"unknown strategy 'fsst'.*fst_noir"),
        ("backend.name", "cuda_fast", r"unknown backend 'cuda_fast'.*native.*reference"),
        ("model.name", "resnet19", r"unknown model 'resnet19'.*resnet18"),
        ("data.name", "cifar", r"unknown dataset 'cifar'.*digits"),
        ("optim.name", "lamb", r"unknown optimizer 'lamb'.*sgd"),
        ("task", "segmentation", r"unknown task 'segmentation'.*classification"),
        ("trainer.precision", "fp8", r"trainer.precision.*bf16"),
    ],
)
def test_unknown_names_fail_with_valid_choices(key, value, match):
    cfg = compose()
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


@pytest.mark.parametrize(
    "key, match",
    [
        ("trainer.epoch", r"trainer.*epoch.*valid keys.*epochs"),
        ("model.smal_stem", r"model.smal_stem.*valid keys.*small_stem"),
        ("data.imagesize", r"data.imagesize.*valid keys.*image_size"),
        ("optim.momentun", r"optim.momentun.*valid keys.*momentum"),
        ("sched.warmup", r"sched.warmup.*valid keys.*warmup_epochs"),
        ("sparsity.decy", r"sparsity.decy"),
        ("trainning", r"trainning.*valid keys"),
    ],
)
def test_misspelt_file_key_fails_naming_valid_keys(key, match):
    # Keys that a YAML file (not the command line) adds are caught by validate_config.
    cfg = compose()
    OmegaConf.set_struct(cfg, False)
    OmegaConf.update(cfg, key, 1, force_add=True)
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_wrong_type_fails():
    cfg = compose()
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.epochs = "many"
    with pytest.raises(ConfigError, match="epochs"):
        validate_config(cfg)


def test_schedule_parameters_belong_to_the_strategy_sparsifier():
    cfg = compose(["sparsity=asp", "sparsity.dense_epochs=1"])
    sparsity = resolve_config(cfg).sparsity
    assert sparsity.schedule == {"dense_epochs": 1}
    assert sparsity.options == {}  # not a strategy option of fst.sparsify
    cfg = compose(["sparsity=dpf", "+sparsity.dense_epochs=1"])  # ASP's, not DPF's
    with pytest.raises(ConfigError, match="dense_epochs.*ramp_end"):
        validate_config(cfg)
    cfg = compose(["+sparsity.update_every=3"])  # fst keeps no state: no schedule
    with pytest.raises(ConfigError, match="update_every"):
        validate_config(cfg)


def test_sparsity_options_are_checked_against_the_strategy():
    cfg = compose(["+sparsity.ir_coef=0.5"])
    validate_config(cfg)  # a real strategy option passes
    cfg = compose(["+sparsity.ir_coeff=0.5"])
    with pytest.raises(ConfigError, match="ir_coeff.*ir_coef"):
        validate_config(cfg)
