"""End-to-end training in-process: logs, summary, checkpoints, exact resume, every experiment."""

from __future__ import annotations

import json

import pytest
import torch

from fst.engine.config import ConfigError
from fst.engine.training import train
from fst.logging.jsonl import read_jsonl
from tests.conftest import CONFIGS, SHRINK, TINY_DIGITS, TINY_RESNET, TINY_VIT, compose

SUMMARY_KEYS = {
    "name", "experiment", "strategy", "backend", "model", "dataset", "seed", "epochs", "steps",
    "world_size", "val/top1", "val/top5", "val/loss", "best/val/top1", "train_time_s",
    "commit", "config_path",
}  # fmt: skip


def test_digits_run_writes_metrics_summary_and_checkpoints(tmp_path):
    cfg = compose(
        [
            *SHRINK,
            *TINY_DIGITS,
            "trainer.epochs=2",
            "trainer.log_every_n_steps=1",
            "logger.diagnostics_every_n_steps=1",
        ]  # fmt: skip
    )
    summary = train(cfg, run_dir=tmp_path)

    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 4 and summary["epochs"] == 2 and summary["world_size"] == 1
    assert (summary["strategy"], summary["dataset"], summary["model"]) == (
        "fst",
        "digits",
        "resnet18",
    )
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["val/top1"] == summary["val/top1"]
    assert 0.0 <= summary["val/top1"] <= 100.0 and summary["val/top5"] >= summary["val/top1"]

    recs = read_jsonl(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in recs if "train/loss" in r]
    assert steps == [1, 2, 3, 4]
    train_rec = next(r for r in recs if "train/loss" in r)
    assert {"train/lr", "train/img_per_s"} <= set(train_rec) and train_rec["train/img_per_s"] > 0
    val = [r for r in recs if "val/top1" in r]
    assert [r["epoch"] for r in val] == [0, 1]
    assert {"val/top5", "val/loss"} <= set(val[0])
    diag = [r for r in recs if "sparsity/valid_fwd_mean" in r]
    assert diag and diag[-1]["sparsity/valid_fwd_mean"] == 1.0  # S(W) is 2:4 in every layer
    assert "sparsity/layer1.0.conv1/flip_rate" in diag[-1] and "sparsity/mask_ms" in diag[-1]

    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "config", "meta", "sampler"):
        assert key in last
    assert (last["epoch"], last["step_in_epoch"], last["global_step"]) == (2, 0, 4)
    assert last["config"]["sparsity"]["strategy"] == "fst"
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "config_resolved.yaml").is_file()
    # Issue 26: the default keeps last.pt and best.pt only, and a finished run leaves no lock.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not (tmp_path / ".lock").exists()


def _final_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_preempted_run_resumes_exactly(tmp_path):
    """SIGTERM mid-epoch -> last.pt + exit 75 -> resume=auto -> bit-identical final weights."""
    base = [
        *SHRINK,
        *TINY_DIGITS,
        *TINY_RESNET,
        "data.augment_shift=1",  # random augmentation: exercises the restored RNG state
        "trainer.epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.log_every_n_steps=1",
    ]
    train(compose(base), run_dir=tmp_path / "straight")

    run = tmp_path / "interrupted"
    with pytest.raises(SystemExit) as exit_info:
        train(compose([*base, "trainer.debug_signal_at_step=4"]), run_dir=run)
    assert exit_info.value.code == 75
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 1, 4)
    assert saved["sampler"]["samples_consumed"] == 4

    summary = train(compose([*base, "resume=auto"]), run_dir=run)
    assert summary["steps"] == 6
    a, b = _final_weights(tmp_path / "straight"), _final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step logged twice after the resume


def test_resume_auto_finds_sibling_run(tmp_path):
    base = [*SHRINK, *TINY_DIGITS, *TINY_RESNET, "trainer.limit_train_batches=1"]
    cfg = compose(base)
    first = tmp_path / "name" / "seed0" / "2026-01-01_00-00-00"
    train(cfg, run_dir=first)
    later = tmp_path / "name" / "seed0" / "2026-01-02_00-00-00"
    summary = train(compose([*base, "trainer.epochs=2", "resume=auto"]), run_dir=later)
    assert summary["run_dir"] == str(first.resolve()) and summary["steps"] == 2


def test_resume_auto_skips_a_same_name_run_with_other_settings(tmp_path, caplog):
    """Issue 26: the default name does not show data.image_size or model.width; resume=auto
    matches by the resolved settings, so another image size starts fresh instead of failing."""
    base = [*SHRINK, *TINY_DIGITS, *TINY_RESNET, "trainer.limit_train_batches=1"]
    first = tmp_path / "name" / "seed0" / "2026-01-01_00-00-00"
    train(compose(base), run_dir=first)
    later = tmp_path / "name" / "seed0" / "2026-01-02_00-00-00"
    with caplog.at_level("WARNING"):
        summary = train(compose([*base, "data.image_size=8", "resume=auto"]), run_dir=later)
    assert summary["run_dir"] == str(later.resolve()) and summary["resumed_from"] is None
    assert "1 resolved setting(s) differ (data.image_size: checkpoint 16 vs this run 8)" in (
        caplog.text
    )


def test_gradient_accumulation_matches_full_batch(tmp_path):
    common = [*SHRINK, *TINY_DIGITS, *TINY_VIT, "sparsity=srste"]
    train(compose(common), run_dir=tmp_path / "full")
    train(compose([*common, "trainer.accumulate_grad_batches=2"]), run_dir=tmp_path / "accum")
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "accum")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_missing_data_root_points_to_layout_and_digits():
    cfg = compose(["+experiment=fst_resnet18", *SHRINK])
    with pytest.raises(ConfigError, match=r"(?s)data.root.*train/<class_name>.*data=digits"):
        train(cfg)


def test_malformed_data_root(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    cfg = compose(["+experiment=fst_resnet18", *SHRINK, f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match=r"(?s)(holds no images|missing val).*data=digits"):
        train(cfg)


def _task_of(path) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.load(path).get("task", "classification")


# Detection experiments (task: detection) run shrunk in tests/tasks/test_detection*.py.
CLASSIFICATION_EXPERIMENTS = sorted(
    p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if _task_of(p) == "classification"
)


@pytest.mark.parametrize("name", CLASSIFICATION_EXPERIMENTS)
def test_every_experiment_runs_shrunk(name, tiny_imagefolder, tmp_path):
    """Each experiment file, shrunk to 1 step of 2 images of 8 px (a tiny ImageFolder tree for
    the ImageNet ones), with its own model, strategy and recipe otherwise. Gradients are clipped:
    BatchNorm over 2 samples of 1x1 maps (ImageNet stems at 8 px) gives updates of 1e4, and the
    validation loss would be NaN, which now (rightly) stops a run."""
    shrink = [*SHRINK, "trainer.limit_train_batches=1", "trainer.save_checkpoints=false",
              "data.batch_size=2", "data.val_batch_size=2",
              "trainer.grad_clip_norm=1.0"]  # fmt: skip
    data = compose([f"+experiment={name}"]).data
    if "root" in list(data.keys()):  # (`in` is False for a missing ??? value)
        shrink += [f"data.root={tiny_imagefolder}", "data.image_size=8", "data.resize_size=9"]
    elif "image_size" in data:
        shrink += ["data.image_size=8"]
    if compose([f"+experiment={name}"]).model.name == "vit":  # a 2x2 patch grid, one thin block
        shrink += ["model.patch_size=4", "model.embed_dim=16", "model.depth=1", "model.num_heads=2"]
    cfg = compose([f"+experiment={name}", *shrink])
    summary = train(cfg, run_dir=tmp_path)
    assert summary["name"] == cfg.name and summary["steps"] == 1
    assert summary["strategy"] == cfg.sparsity.strategy
    assert 0.0 <= summary["val/top1"] <= 100.0


def test_finetune_from_a_local_state_dict_with_another_head(tmp_path, caplog):
    """Issue 26: model.pretrained with a 1000-class head trains a 10-class digits run."""
    import timm

    path = tmp_path / "imagenet-head.pth"
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), path)
    base = [*SHRINK, *TINY_DIGITS, *TINY_RESNET, f"model.pretrained={path}"]
    with caplog.at_level("WARNING"):
        summary = train(compose(base), run_dir=tmp_path / "run")
    assert summary["steps"] == 2
    assert "classifier head fc re-initialised (weights (1000," in caplog.text
    with pytest.raises(ConfigError, match=r"shape mismatch \['fc.weight', 'fc.bias'\]"):
        train(compose([*base, "model.pretrained_strict=true"]), run_dir=tmp_path / "strict")


def test_checkpoints_from_before_the_new_keys_still_resume():
    """A checkpoint's config written before model.pretrained_strict and
    trainer.keep_checkpoints existed: both differences are allowed on resume."""
    from omegaconf import OmegaConf

    from fst.engine.resume import _compare

    cfg = compose([*SHRINK, *TINY_DIGITS])
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["model"]["pretrained_strict"], old["trainer"]["keep_checkpoints"]
    changes, refused = _compare(cfg, old)
    assert refused == [] and len(changes) == 2, (changes, refused)
