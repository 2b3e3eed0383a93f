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
    assert "| 32.5 |" in lines["meprop"] and "40.00 ± 0.00 (n=1)" in lines["meprop"]
    assert "| 76.2 |" in lines["rigl"]  # the paper's row is ResNet-50 only
    for row in ("prunet", "clickt", "sparset"):
        assert "not implemented" in lines[row]
    assert "| NA |" in lines["sparset"] and "- sparset: SparseTrain" in body
    assert "not run" in lines["resprop"]  # implemented, no run here
