import json

import pytest

from fst.analysis import tables


def _run(
    root, strategy, seed, top1, dataset="digits", model="resnet18", epochs=2, task="classification"
):
    d = root / f"{strategy}_{model}_{dataset}" / f"seed{seed}"
    d.mkdir(parents=True)
    metric = "top1" if task == "classification" else "mAP"
    summary = {
        "task": task,
        "model": model,
        "dataset": dataset,
        "strategy": strategy,
        "seed": seed,
        "epochs": epochs,
        "global_batch_size": 64,
        "primary_metric": metric,
        f"val/{metric}": top1,
        "embedded_data": dataset == "digits",
    }
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config_resolved.yaml").write_text("data:\n  image_size: 32\nmodel:\n  name: resnet18\n")
    return d


def test_table5_mean_std_and_paper_column(tmp_path):
    for seed, v in enumerate([90.0, 92.0, 94.0]):
        _run(tmp_path, "fst", seed, v)
    _run(tmp_path, "fst_noir", 0, 80.0)
    _run(tmp_path, "wx", 0, 85.0)  # not a Table 5 row
    summaries = tables.find_summaries([tmp_path])
    csv_rows, body = tables.build(tables.TABLES["table5"], summaries)
    by = {r["row"]: r for r in csv_rows}
    assert set(by) == {"fst", "fst_noir"}
    assert (
        by["fst"]["mean"] == 92.0 and by["fst"]["std"] == pytest.approx(2.0) and by["fst"]["n"] == 3
    )
    assert by["fst"]["paper"] == 71.0 and "digits (embedded) 32px" in by["fst"]["scale"]
    assert "92.00 ± 2.00 (n=3)" in body and "not run" in body  # dense etc. have no runs
    assert "| 69.4 |" in body  # the paper's fst_noir


def test_scales_are_separate_columns(tmp_path):
    _run(tmp_path, "dense", 0, 95.0, epochs=2)
    _run(tmp_path, "dense", 1, 96.0, epochs=8)
    agg = tables.aggregate(tables.TABLES["table1"], tables.find_summaries([tmp_path]))
    assert len(agg) == 2 and all(v["dense"]["n"] == 1 for v in agg.values())


def test_no_matching_runs_gives_none(tmp_path):
    _run(tmp_path, "fst", 0, 50.0)
    assert tables.build(tables.TABLES["table4"], tables.find_summaries([tmp_path])) is None


def test_detection_runs_on_other_data_keep_their_row(tmp_path):
    _run(tmp_path, "fst", 0, 40.0, dataset="shapes", model="ssd300_vgg16", task="detection")
    csv_rows, body = tables.build(tables.TABLES["table4"], tables.find_summaries([tmp_path]))
    assert csv_rows[0]["row"] == "shapes / ssd300_vgg16 / fst"
    assert "voc / ssd300_vgg16 / fst" in body  # the paper's rows stay listed


def test_missing_run_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tables.find_summaries([tmp_path / "nope"])


def test_table3_lists_every_row_and_the_unimplemented_ones(tmp_path):
    for strategy, v in (("dense", 70.0), ("meprop", 40.0), ("rigl", 65.0), ("asp", 68.0)):
        _run(tmp_path, strategy, 0, v)
    csv_rows, body = tables.build(tables.TABLES["table3"], tables.find_summaries([tmp_path]))
    assert {r["row"] for r in csv_rows} == {"dense", "meprop", "rigl", "asp"}
    lines = {line.split(" | ")[0].lstrip("| "): line for line in body.splitlines()}
    assert "| 32.5 |" in lines["meprop"] and "| 40.00 (n=1) |" in lines["meprop"]
    assert "| 76.2 |" in lines["rigl"]  # the paper's row is ResNet-50 only
    for row in ("prunet", "clickt", "sparset"):
        assert "not implemented" in lines[row]
    assert "| NA |" in lines["sparset"] and "- sparset: SparseTrain" in body
    assert "not run" in lines["resprop"]  # implemented, no run here


def _cfg_run(root, name, seed, top1, strategy="dense", **overrides):
    """A run whose config_resolved.yaml is a real composed config with ``overrides`` applied
    (dotted keys), as train.py writes it."""
    import yaml

    cfg = {
        "model": {"name": "resnet18", "width": 64, "small_stem": True},
        "data": {"name": "digits", "image_size": 32, "batch_size": 32, "num_workers": 0},
        "sparsity": {"strategy": strategy, "decay": 2e-4, "exclude": []},
        "optim": {"name": "sgd", "lr": 0.02},
        "trainer": {"epochs": 1, "limit_train_batches": None, "progress_bar": True},
        "logger": {"wandb": None},
        "name": name,
        "seed": seed,
        "output_root": "outputs",
    }
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    d = root / name / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    summary = {
        "task": "classification",
        "model": cfg["model"]["name"],
        "dataset": cfg["data"]["name"],
        "strategy": strategy,
        "seed": seed,
        "epochs": cfg["trainer"]["epochs"],
        "global_batch_size": cfg["data"]["batch_size"],
        "primary_metric": "top1",
        "val/top1": top1,
        "embedded_data": True,
        "device": "cpu",
    }
    (d / "summary.json").write_text(json.dumps(summary))


def test_runs_differing_in_width_or_batch_limit_are_never_averaged(tmp_path):
    """Issue 14 item 3: width 64 for 3 batches and width 16 for a full epoch were averaged into
    one cell (16.67 +- 6.68, n=2)."""
    _cfg_run(tmp_path, "a", 0, 10.0, model__width=64, trainer__limit_train_batches=3)
    _cfg_run(tmp_path, "b", 0, 23.33, model__width=16)
    csv_rows, body = tables.build(tables.TABLES["table1"], tables.find_summaries([tmp_path]))
    assert sorted((r["n"], r["mean"], r["std"]) for r in csv_rows) == [
        (1, 10.0, ""),
        (1, 23.33, ""),
    ]
    assert "16.67" not in body and "± 0.00" not in body
    dense = next(line for line in body.splitlines() if line.startswith("| dense |"))
    assert dense.endswith("| 23.33 (n=1) | 10.00 (n=1) |")  # columns sorted by label
    legend = [line for line in body.splitlines() if line.startswith("- ours")]
    assert len(legend) == 2
    assert any("resnet18 width 64" in x and "1 ep of 3 batches" in x for x in legend)
    assert any("resnet18 width 16" in x and "of 3 batches" not in x for x in legend)


@pytest.mark.parametrize(
    "change",
    [
        {"model__arch": "convnext_tiny"},
        {"model__patch_size": 8},
        {"model__kwargs": {"stem_width": 16}},
        {"data__image_size": 16},
        {"data__name": "digits_hard"},
        {"trainer__epochs": 3},
        {"data__batch_size": 64},
        {"optim__lr": 0.1},
        {"trainer__precision": "32"},
        {"backend": {"name": "reference"}},
    ],
)
def test_every_setting_that_changes_the_result_separates_columns(tmp_path, change):
    _cfg_run(tmp_path, "a", 0, 50.0)
    _cfg_run(tmp_path, "b", 1, 60.0, **change)
    agg = tables.aggregate(tables.TABLES["table1"], tables.find_summaries([tmp_path]))
    assert len(agg) == 2 and all(v["dense"]["n"] == 1 for v in agg.values())
    assert len(set(agg)) == 2  # distinct labels, naming the difference


def test_settings_that_cannot_change_the_result_do_not_separate(tmp_path):
    _cfg_run(tmp_path, "a", 0, 50.0)
    _cfg_run(
        tmp_path,
        "b",  # another name, logger, data loading, display and checkpointing
        1,
        60.0,
        data__num_workers=4,
        trainer__progress_bar=False,
        logger__wandb={"mode": "offline"},
        output_root="elsewhere",
    )
    (cell,) = [c for rows in tables.aggregate(tables.TABLES["table1"], tables.find_summaries([tmp_path])).values() for c in rows.values()]  # fmt: skip
    assert cell["n"] == 2 and cell["mean"] == 55.0 and cell["std"] == pytest.approx(7.0711, 1e-4)


def test_strategy_options_make_their_own_row(tmp_path):
    _cfg_run(tmp_path, "fst", 0, 70.0, strategy="fst")
    _cfg_run(tmp_path, "fst_explicit", 1, 72.0, strategy="fst", sparsity__ir_coef=1.0)  # default
    _cfg_run(tmp_path, "fst_half", 0, 60.0, strategy="fst", sparsity__ir_coef=0.5)
    _cfg_run(tmp_path, "fst_cin", 0, 65.0, strategy="fst", sparsity__exclude=["conv1", "fc"])
    csv_rows, body = tables.build(tables.TABLES["table5"], tables.find_summaries([tmp_path]))
    by = {r["row"]: r for r in csv_rows}
    assert set(by) == {"fst", "fst (ir_coef=0.5)", 'fst (exclude=["conv1", "fc"])'}
    assert by["fst"]["n"] == 2 and by["fst (ir_coef=0.5)"]["n"] == 1
    assert by["fst"]["paper"] == 71.0 and by["fst (ir_coef=0.5)"]["paper"] == ""
    rows = [
        line.split(" | ")[0].lstrip("| ") for line in body.splitlines() if line.startswith("| ")
    ]
    assert rows.index("fst") < rows.index("fst (ir_coef=0.5)")  # variants follow their strategy
