"""The detection task in the one engine: a training step, an evaluation, and every Table 4
experiment run end to end (shrunk) on the embedded shapes set."""

from __future__ import annotations

import math

import pytest
import torch

from fst.engine.config import resolve_config
from fst.engine.training import build_model, train
from fst.layers import SparseConv2d, SparseLinear
from fst.tasks import TASKS
from tests.conftest import CONFIGS, compose

TABLE4 = sorted(p.stem for p in (CONFIGS / "experiment").glob("table4_*.yaml"))
LOSS_KEYS = {
    "fasterrcnn_r50_fpn": {
        "loss",
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
    },
    "ssd300_vgg16": {"loss", "bbox_regression", "classification"},
}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shapes")


def _shrink(root, model: str) -> list[str]:
    out = [
        "data=shapes", f"data.root={root}", "data.num_train=4", "data.num_val=2",
        "data.image_size=64", "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0",
        "logger=none", "trainer.device=cpu", "trainer.epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.progress_bar=false", "trainer.precision=32",
    ]  # fmt: skip
    if model == "fasterrcnn_r50_fpn":  # the paper rows resize to 600-800 px; keep it tiny
        out += ["model.min_size=64", "model.max_size=64", "model.width_per_group=16",
                "model.fpn_channels=64", "model.representation_size=64",
                "model.rpn_post_nms_top_n_train=100", "model.rpn_post_nms_top_n_test=50"]  # fmt: skip
    else:  # SSD300 always runs VGG16 at 300x300: one image per step
        out += ["data.batch_size=1", "data.val_batch_size=1"]
    return out


@pytest.mark.parametrize(
    "experiment", ["table4_fasterrcnn_r50_fpn_shapes_fst", "table4_ssd300_vgg16_shapes_fst"]
)
def test_train_step_and_evaluate(experiment, shapes_root):
    model_name = experiment.removeprefix("table4_").rsplit("_shapes", 1)[0]
    cfg = compose([f"+experiment={experiment}", *_shrink(shapes_root, model_name)])
    assert cfg.task == "detection" and cfg.model.name == model_name
    run = resolve_config(cfg)
    task = TASKS[run.task](run)
    data = task.build_data()
    assert task.num_classes == 4 and data.num_classes == 4
    torch.manual_seed(0)
    model = build_model(task, run)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert layers and all(isinstance(m, (SparseConv2d, SparseLinear)) for m in layers)

    n = 2 if model_name == "fasterrcnn_r50_fpn" else 1
    batch = data.collate_fn([data.train[i] for i in range(n)])
    assert task.batch_size(batch) == n
    model.train()
    losses = task.train_step(model, batch, torch.device("cpu"))
    assert set(losses) == LOSS_KEYS[model_name]
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert losses["loss"].requires_grad
    torch.testing.assert_close(
        losses["loss"].detach(), sum(v for k, v in losses.items() if k != "loss")
    )
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        out = model([data.val[0][0]])
    assert set(out[0]) == {"boxes", "labels", "scores"} and out[0]["boxes"].shape[1] == 4
    val = torch.utils.data.Subset(data.val, range(n))
    loader = torch.utils.data.DataLoader(val, batch_size=n, collate_fn=data.collate_fn)
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert {"mAP", "AP50", "AP75"} <= set(metrics)
    assert all(0.0 <= v <= 100.0 for v in metrics.values())


def test_table4_has_every_row():
    for model in ("ssd300_vgg16", "fasterrcnn_r50_fpn"):
        for data in ("voc", "coco", "shapes"):
            for strategy in ("dense", "fst"):
                assert f"table4_{model}_{data}_{strategy}" in TABLE4
                cfg = compose([f"+experiment=table4_{model}_{data}_{strategy}"])
                assert (cfg.task, cfg.model.name, cfg.data.name) == ("detection", model, data)
                assert cfg.sparsity.strategy == strategy and list(cfg.sparsity.exclude) == []


@pytest.mark.parametrize("name", TABLE4)
def test_every_table4_experiment_runs_shrunk(name, shapes_root, tmp_path):
    """Each Table 4 row with data=shapes at a tiny size, 1 step + 1 evaluation, through train()."""
    model = compose([f"+experiment={name}"]).model.name
    cfg = compose([f"+experiment={name}", *_shrink(shapes_root, model)])
    summary = train(cfg, run_dir=tmp_path)
    assert summary["name"] == name and summary["steps"] == 1 and summary["task"] == "detection"
    assert summary["primary_metric"] == "mAP" and 0.0 <= summary["val/mAP"] <= 100.0
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
