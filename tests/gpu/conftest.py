"""Shared helpers of the CUDA tests (``pytest -m gpu``); every test here skips without CUDA."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
needs_sparse_tensor_cores = pytest.mark.skipif(
    not HAS_CUDA or torch.cuda.get_device_capability()[0] < 8,
    reason="needs a CUDA GPU with sparse tensor cores (compute capability >= 8.0)",
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, both moved to CPU float64 (b is the reference)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture
def no_tf32():
    """Full fp32 convolutions and matmuls (TF32 would round inputs to 10 mantissa bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
