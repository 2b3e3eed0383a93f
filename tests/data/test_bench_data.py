"""``scripts/bench_data.py`` runs end to end in its tiny mode: table, JSON line, JSON file."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_data.py"


def test_bench_data_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r" / "bench.json"
    mod.main(["--tiny", "--data-dir", str(tmp_path / "photos"), "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert json.loads(out.read_text()) == result
    assert set(result["img_s"]) == {"pil", "torchvision"}
    assert set(result["paired_ratio_torchvision_pil"]) == {"0"}
    assert all(v > 0 for per in result["img_s"].values() for v in per.values())
    assert result["ratio_torchvision_pil"]["0"] > 0 and result["step_img_s"] > 0
    assert any(line.startswith("torchvision ") for line in lines)  # the table row
    assert (tmp_path / "photos" / "train" / "astronaut").is_dir()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_data_tiny_on_cuda(tmp_path, capsys):
    """``--device cuda`` adds ``torchvision@cuda`` (nvJPEG decode + augmentation on the GPU)."""
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--tiny", "--device", "cuda", "--data-dir", str(tmp_path / "p")]
    result = mod.main([*argv, "--out", str(tmp_path / "bench.json")])
    assert set(result["img_s"]) == {"pil", "torchvision", "torchvision@cuda"}
    assert result["gpu"] and result["step_img_s"] > 0
