"""The Triton 2:4 mask (fst.masks_cuda) against the eager formulation, on CPU under Triton's
interpreter (``TRITON_INTERPRET=1`` must be set before the kernel is defined: a subprocess).
The same comparison on a real GPU, bf16 too, is in tests/gpu/test_masks_cuda.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

CHECK = textwrap.dedent(
    """
    import torch
    from fst.masks import _groups, _keep_2of4, _ungroup
    from fst.masks_cuda import available, nm24_mask

    def eager(a, dim):
        dim = dim % a.dim()
        return _ungroup(_keep_2of4(_groups(a, dim, 4)), a.shape, dim)

    torch.manual_seed(0)
    cases = [((8, 13), 1), ((13, 8), 0), ((6, 5, 3, 3), 1), ((7, 9), 0), ((64, 576), 1),
             ((64, 576), 0), ((3,), 0), ((5, 6, 7), 1), ((5, 6, 7), -1), ((0, 4), 1)]
    for shape, dim in cases:
        for kind in ("rand", "ties", "nan"):
            a = torch.rand(shape) if kind != "ties" else torch.randint(0, 3, shape).float()
            if kind == "nan" and a.numel():
                a.view(-1)[::5] = float("nan")
            assert available(a)
            got = nm24_mask(a, dim)
            want = eager(a, dim) if a.numel() else torch.zeros(shape, dtype=torch.bool)
            assert got.dtype == torch.bool and got.shape == a.shape
            assert torch.equal(got, want), (shape, dim, kind)
    print("ok", len(cases))
    """
)


def test_triton_mask_matches_eager_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "FST_TRITON_MASKS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ok 10" in proc.stdout


def test_switched_off_and_cpu_tensors_use_the_eager_path(monkeypatch):
    import torch

    from fst import masks_cuda

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not masks_cuda.available(torch.zeros(4))  # CPU tensor: eager formulation
    monkeypatch.setenv("FST_TRITON_MASKS", "0")
    assert not masks_cuda.available(torch.zeros(4))
