"""cuSPARSELt from cached plans (fst.ops.cslt_cupy through CusparseltGemm) on a GPU: the same
products as the per-call ``torch._cslt_sparse_mm`` and the CPU emulation, on every B / result
layout, with bias, repeated (plan reused), on a side stream and inside a CUDA-graph capture
(both run torch's operator). The CPU twin (keys, fallback, pack cache):
tests/ops/test_cslt_cache.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fst.masks import nm_mask
from fst.ops.cslt import CusparseltGemm, EmulatedGemm
from tests.gpu.conftest import needs_sparse_tensor_cores, rel_err

pytestmark = [pytest.mark.gpu, needs_sparse_tensor_cores]
BF16 = torch.bfloat16
HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _operands(m, k, n, col_major):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, k, device="cuda", generator=g).to(BF16)
    a = a * nm_mask(a, dim=1)
    b = torch.randn(k, n, device="cuda", generator=g).to(BF16)
    if col_major:
        b = b.t().contiguous().t()
    bias = torch.randn(m, device="cuda", generator=g).to(BF16)
    return a, b, bias


@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy (the plan driver's bindings)")
@pytest.mark.parametrize("search_alg", [False, True])
@pytest.mark.parametrize("transpose_result", [False, True])
@pytest.mark.parametrize("col_major", [False, True])
@pytest.mark.parametrize("mkn", [(64, 64, 256), (20, 37, 13), (3072, 768, 1024)])
def test_cupy_plans_match_torch_and_emulation(mkn, col_major, transpose_result, search_alg):
    a, b, bias = _operands(*mkn, col_major)
    gemm = CusparseltGemm(search_alg=search_alg, driver="cupy")
    emu = EmulatedGemm()
    want = emu.mm(emu.compress(a), b, bias, transpose_result)
    packed = gemm.compress(a)
    for _ in range(3):
        got = gemm.mm(packed, b, bias, transpose_result)
        assert gemm.driver_failure is None, gemm.driver_failure
        assert gemm.driver_used == "cupy"
        assert got.shape == want.shape and rel_err(got, want) < 1e-2
    assert gemm.plans.builds == 1 and gemm.plans.hits == 2


@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy (the plan driver's bindings)")
def test_side_streams_and_graph_capture_use_torchs_operator():
    a, b, bias = _operands(64, 64, 256, False)
    gemm = CusparseltGemm(driver="cupy")
    packed = gemm.compress(a)
    want = gemm.mm(packed, b, bias, True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = gemm.mm(packed, b, bias, True)
        assert gemm.driver_used == "torch"
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = gemm.mm(packed, b, bias, True)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want)
    assert gemm.driver_failure is None
