"""The GPU scripts' CPU modes: bench_gemm --dry-run, bench_step's entry syntax, the suite's plumbing.

Their real runs need a CUDA GPU (``bash scripts/gpu_suite.sh OUT``); here every code path runs
on CPU in seconds with the emulated sparse GEMM, and the suite's dry run must produce its files.
"""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gemm_dry_run(tmp_path, capsys):
    result = _load("bench_gemm").main(["--device", "cpu", "--dry-run", "--out", str(tmp_path)])
    assert result["gemm"] == "emulated" and result["dry_run"] is True
    rows = result["rows"]
    assert len(rows) == 9 and {r["gemm"] for r in rows} == {"eq1", "eq2", "eq3"}
    for r in rows:
        assert "error" not in r, r
        assert all(r[k] > 0 for k in ("dense_ms", "sparse_ms", "compress_ms", "mask_ms"))
        assert all(r[f"{k}_host_us"] > 0 for k in ("dense", "torch", "cached", "compress"))
    stem = next(r for r in rows if r["layer"].startswith("conv 64x3x7x7") and r["gemm"] == "eq1")
    assert (stem["m"], stem["k"], stem["n"]) == (64, 147, 2 * 16 * 16)  # Co, Ci*kh*kw, N*Ho*Wo
    assert all("half_ms" in r for r in rows if r["gemm"] == "eq3")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["all_dense_ms"] == result["all_dense_ms"]
    md = (tmp_path / "bench_gemm.md").read_text()
    assert "Host us per eager call" in md and "| median |" in md
    assert "DRY RUN" in md and "| conv 64x3x7x7 s2 @32 | 1 | eq1 | 64 | 147 | 512 |" in md
    assert json.loads((tmp_path / "bench_gemm.json").read_text())["rows"] == rows


def test_bench_gemm_shapes_of_resnet50_at_batch_256():
    convs = _load("bench_gemm").resnet50_convs(256, 224)
    assert sum(c["count"] for c in convs) == 53 and len(convs) == 23
    c = next(c for c in convs if c["layer"] == "conv 64x64x3x3 s1 @56")
    assert (c["count"], c["co"], c["k"], c["p"]) == (3, 64, 576, 256 * 56 * 56)


def test_bench_step_backend_per_entry(tmp_path, capsys):
    args = ["--model", "resnet18", "--batch", "2", "--res", "32", "--steps", "1", "--warmup", "0"]
    args += ["--strategies", "dense,fst@native,srste@reference", "--out", str(tmp_path)]
    result = _load("bench_step").main(args)
    for entry in ("dense", "fst@native", "srste@reference"):
        assert result[f"{entry}_ms"] > 0 and f"ratio_{entry}" in result
    assert "img_s" not in json.dumps(result)  # CPU: no GPU columns
    md = (tmp_path / "bench_step_resnet18.md").read_text()
    assert "fst@native" in md and "command: `python scripts/bench_step.py --model resnet18" in md
    with pytest.raises(Exception, match="unknown backend 'nope'"):
        _load("bench_step").parse_args(["--strategies", "dense,fst@nope"])


def test_gpu_shell_scripts_parse():
    for name in ("gpu_suite.sh", "gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)


@pytest.mark.slow
def test_gpu_suite_dry_run_writes_its_files(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_suite.sh"), str(out), "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "bench_gemm.json", "bench_gemm.md", "bench_step.json", "bench_step.md", "env.md",
        "suite.json", "tests.md",
    ]  # fmt: skip
    suite = json.loads((out / "suite.json").read_text())
    assert suite["ok"] and suite["dry_run"]
    assert [r["part"] for r in suite["results"]] == [
        "install", "env", "tests", "bench_gemm", "bench_gemm_search", "bench_step_resnet18",
        "bench_step_resnet50", "bench_step_resnet18_graph", "bench_step_resnet50_graph",
    ]  # fmt: skip
    assert "skipped" in (out / "tests.md").read_text()
    assert len((out / "bench_step.json").read_text().splitlines()) == 4
    assert len((out / "bench_gemm.json").read_text().splitlines()) == 2


def test_gpu_suite_records_a_failing_part(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_suite.sh"), str(out), "--dry-run", "--part", "nonsense"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "unknown part 'nonsense'" in proc.stderr
    assert json.loads((out / "suite.json").read_text())["ok"] is True  # install/env ran fine


@pytest.mark.slow
def test_gpu_suite_vit_part_dry_run_writes_its_files(tmp_path):
    """Issue 23's one-call device run (``--part vit``) on CPU: every part runs tiny, 7 files."""
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_suite.sh"), str(out), "--dry-run", "--part", "vit"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "bench_gemm.json", "bench_gemm.md", "bench_vit.json", "bench_vit.md", "env.md",
        "suite.json", "tests.md",
    ]  # fmt: skip
    suite = json.loads((out / "suite.json").read_text())
    assert suite["ok"] and [r["part"] for r in suite["results"]] == [
        "install", "env", "vit_tests", "bench_gemm_vit", "vit_mlp_large", "vit_step_base_compile",
        "vit_step_large_graph", "vit_step_base_graph", "vit_block_large",
    ]  # fmt: skip
    runs = [json.loads(line) for line in (out / "bench_vit.json").read_text().splitlines()]
    assert [r["what"] for r in runs] == ["mlp", "step", "step", "step", "block"]
    assert "breakdown" in runs[0] and all(r["emulated"] for r in runs)
