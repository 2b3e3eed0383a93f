"""scripts/compare.py and the multirun summary (issue 26): a shrunk 3-strategy x 2-seed sweep."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys

from tests.conftest import ROOT, subprocess_env

TINY = [
    "logger=none",
    "trainer.device=cpu",
    "trainer.precision=32",
    "trainer.progress_bar=false",
    "trainer.epochs=2",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.save_checkpoints=false",
    "data.image_size=8",
    "data.augment_shift=0",
    "data.batch_size=8",
    "data.val_batch_size=8",
    "model=timm",
    "model.arch=test_resnet",
]


def _script_main():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "scripts" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_sweep_prints_the_summary_and_compare_writes_table_and_png(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "sparsity=dense,fst,srste",
            "seed=0,1",
            *TINY,
            f"hydra.sweep.dir={sweep_dir}",
            f"output_root={tmp_path}",
        ],  # fmt: skip
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # The multirun's own summary: one group, three strategy rows over two seeds each.
    assert "multirun summary" in out and "6 runs in 1 group(s) of comparable runs" in out, out
    assert "| strategy | final | best | n | wall s | images/s | steps |" in out
    for strategy in ("dense", "fst", "srste"):
        assert re.search(rf"\| {strategy} \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| 2 \| ", out), out
    assert (sweep_dir / "compare.md").is_file() and (sweep_dir / "compare.png").is_file()

    main = _script_main()

    report = main([str(sweep_dir), "--out", str(tmp_path / "cmp")])
    assert (
        len(re.findall(r"^\| (dense|fst|srste) \| .* \| 2 \| [\d.]+ \| \d+ \| 2 \|$", report, re.M))
        == 3
    )
    png = tmp_path / "cmp" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert sorted(r["strategy"] for r in rows) == ["dense", "fst", "srste"]
    assert all(r["n"] == "2" and r["steps"] == "2" and float(r["img_per_s"]) > 0 for r in rows)
    # Another data size is not comparable: a second group with its own table and figure.
    subprocess.run(
        [sys.executable, "train.py", *TINY, "data.image_size=16", "sparsity=fst",
         f"hydra.run.dir={tmp_path / 'other'}"],  # fmt: skip
        cwd=ROOT, env=subprocess_env(), capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    report = main([str(sweep_dir), str(tmp_path / "other"), "--out", str(tmp_path / "two")])
    assert "7 runs in 2 group(s)" in report and "16px" in report
    assert (tmp_path / "two" / "compare_1.png").is_file()
    assert (tmp_path / "two" / "compare_2.png").is_file()


def test_compare_names_a_missing_directory(tmp_path, capsys):
    import pytest

    main = _script_main()

    with pytest.raises(SystemExit, match="does not exist.*sweep directories of train.py"):
        main([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no finished run"):
        main([str(tmp_path / "empty")])
