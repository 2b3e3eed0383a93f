"""Each analysis command runs end to end on tiny inputs and writes its files."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fig2(tmp_path):
    _load("fig2_macs").main(
        ["--out", str(tmp_path), "--image-size", "32", "--strategies", "dense", "fst"]
    )
    for f in ("fig2_macs.png", "fig2_macs.md", "fig2_macs_layers.csv", "fig2_macs_strategies.csv"):
        assert (tmp_path / f).stat().st_size > 0
    assert "| fst | 123 |" in (tmp_path / "fig2_macs.md").read_text()


def test_table2(tmp_path):
    _load("table2_mask_timing").main(["--out", str(tmp_path), "--cpu-batch", "1", "--repeats", "1"])
    md = (tmp_path / "table2_mask_timing.md").read_text()
    assert "1x576x3136" in md and "0.48" in md  # our shape beside the paper's X^T time


def test_fig4(tmp_path):
    _load("fig4_entropy").main(
        ["--out", str(tmp_path), "--images", "2", "--layers", "conv1", "layer1.0.conv1"]
    )
    assert (tmp_path / "fig4_entropy.png").stat().st_size > 10_000
    assert "white noise" in (tmp_path / "fig4_entropy.csv").read_text()


def test_fig5(tmp_path):
    _load("fig5_features").main(["--out", str(tmp_path), "--images", "1"])
    assert "layer2.0.conv1" in (tmp_path / "fig5_features.md").read_text()
    with pytest.raises(SystemExit):
        _load("fig5_features").main(["--out", str(tmp_path), "--convs", "99"])


def test_make_tables(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    s = {
        "task": "classification",
        "model": "resnet18",
        "dataset": "digits",
        "strategy": "gg",
        "seed": 0,
        "epochs": 1,
        "global_batch_size": 8,
        "primary_metric": "top1",
        "val/top1": 10.0,
        "embedded_data": True,
    }
    (run / "summary.json").write_text(json.dumps(s))
    written = _load("make_tables").main(
        [str(tmp_path / "runs"), "--out", str(tmp_path), "--suffix", "_x"]
    )
    assert written == ["table1"]
    md = (tmp_path / "table1_x.md").read_text()
    assert "| 10.00 (n=1) |" in md and "± 0.00" not in md  # one seed: no fake spread
    with pytest.raises(SystemExit, match="error: run directory .* does not exist; pass"):
        _load("make_tables").main([str(tmp_path / "no_such_runs")])  # no traceback


def test_table5_paper_vs_release_rows_per_scale(tmp_path):
    """--out is a folder; runs of different scale are separate rows; one seed has no std."""
    import yaml

    def run(name, seed, width, epochs, top1):
        d = tmp_path / "runs" / name / f"seed{seed}"
        d.mkdir(parents=True)
        cfg = {
            "model": {"width": width},
            "data": {"image_size": 16, "batch_size": 64},
            "trainer": {"epochs": epochs, "limit_train_batches": None},
            "sparsity": {"strategy": "fst", "ir_coef": 1.0, "x_pattern": "fixed"},
        }
        (d / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
        summary = {
            "experiment": "release_ablation_digits",
            "strategy": "fst",
            "seed": seed,
            "run_dir": str(d),
            "config_path": str(d / "config_resolved.yaml"),
            "final": {"val/top1": top1},
            "commit": "abc1234",
        }
        (d / "summary.json").write_text(json.dumps(summary))

    run("a", 0, 16, 5, 90.0)
    run("a", 1, 16, 5, 92.0)
    run("b", 0, 64, 1, 50.0)
    out = tmp_path / "tables"
    _load("table5_paper_vs_release").main([str(tmp_path / "runs"), "--out", str(out)])
    md = (out / "table5_paper_vs_release.md").read_text()
    assert "width 16, 16 px, 5 epochs, batch 64 | 2 | 91.00 | 1.41 |" in md
    assert "width 64, 16 px, 1 epochs, batch 64 | 1 | 50.00 | - |" in md
    assert "nan" not in md and "trained 5 epochs" not in md


def test_every_script_writes_outputs_unless_told():
    """Issue 14 item 2: no script writes results/ by default. Every ``--out`` default of
    scripts/*.py is None (nothing written) or under outputs/; gpu_suite.sh needs its OUT_DIR."""
    import ast
    import subprocess

    from tests.conftest import ROOT

    seen = {}
    for path in sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "add_argument"
                and node.args
                and getattr(node.args[0], "value", None) == "--out"
            ):
                default = next((k.value for k in node.keywords if k.arg == "default"), None)
                seen[path.name] = ast.literal_eval(default) if default is not None else None
    assert set(seen) >= {"bench_data.py", "bench_gemm.py", "bench_step.py", "bench_vit.py",
                         "vit_table.py", "make_tables.py", "fig2_macs.py"}  # fmt: skip
    wrong = {k: v for k, v in seen.items() if v is not None and not str(v).startswith("outputs")}
    assert not wrong, wrong
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_suite.sh")], capture_output=True)
    assert proc.returncode == 2  # no OUT_DIR: usage, nothing written


def test_gradient_fidelity(tmp_path, capsys):
    _load("gradient_fidelity").main(
        ["--out", str(tmp_path), "--cases", "vit_digits_init", "--vit-seeds", "1",
         "--vit-batch", "8", "--strategies", "dense", "gg", "wx", "wx_sort"]
    )  # fmt: skip
    for f in ("gradient_fidelity.png", "gradient_fidelity.md", "gradient_fidelity.csv"):
        assert (tmp_path / f).stat().st_size > 0
    csv = (tmp_path / "gradient_fidelity.csv").read_text()
    assert "vit_digits_init,0,gg," in csv and ",propagated," in csv and ",local," in csv
    md = (tmp_path / "gradient_fidelity.md").read_text()
    assert "| wx_sort |" in md and "- commit:" in md
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["grad_cos"]["vit_digits_init/dense"] == 1.0
    assert last["grad_cos"]["vit_digits_init/wx"] == last["grad_cos"]["vit_digits_init/wx_sort"]
    assert last["grad_cos"]["vit_digits_init/gg"] < 1.0
