"""scripts/bench_step.py runs end to end on a tiny input, eager and with --compile."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_step.py"
TINY = ["--batch", "2", "--res", "32", "--steps", "3", "--warmup", "1", "--threads", "1"]


def _load():
    spec = importlib.util.spec_from_file_location("bench_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_eager_medians_ratios_and_mask_share(capsys):
    before = torch.get_num_threads()
    try:
        result = _load().main([*TINY, "--strategies", "fst"])
    finally:
        torch.set_num_threads(before)
    assert result["threads"] == 1 and result["compile"] is False
    assert result["ratio_dense"] == 1.0 and result["mask_ms_dense"] == 0.0
    assert result["fst_ms"] > 0 and result["mask_ms_fst"] > 0
    assert result["mask_share_fst"] == pytest.approx(
        result["mask_ms_fst"] / result["dense_ms"], rel=1e-2
    )
    lo, hi = result["ratio_fst_iqr"]
    assert lo <= result["ratio_fst"] <= hi
    assert len(result["loadavg_start"]) == 3
    out = capsys.readouterr().out
    assert "round 3/3" in out and "mask share" in out


@pytest.mark.slow
def test_compile_times_compiled_beside_eager(monkeypatch):
    """--compile's code path, with AOTAutograd's eager backend standing in for inductor."""
    real = torch.compile

    def aot_eager(fn=None, *args, **kwargs):
        return real(fn, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", functools.update_wrapper(aot_eager, real))
    before = torch.get_num_threads()
    try:
        result = _load().main([*TINY, "--steps", "2", "--strategies", "fst", "--compile"])
    finally:
        torch.set_num_threads(before)
        torch._dynamo.reset()
    assert result["compile"] == "default"
    for key in ("dense_compiled_ms", "fst_compiled_ms", "ratio_fst_compiled", "compile_s_fst"):
        assert result[key] > 0, key
    assert result["ratio_dense_compiled"] == 1.0
    assert result["mask_ms_fst_compiled"] > 0 and result["mask_ms_dense_compiled"] == 0.0
