"""The Triton 2:4 mask on a real GPU against the eager formulation on CPU, and fst steps
captured as CUDA graphs (``bench_step.py --cuda-graph``) against the same steps run eagerly."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import fst
from fst.masks import nm_mask
from tests.gpu.conftest import needs_cuda, needs_sparse_tensor_cores

pytestmark = [pytest.mark.gpu]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,dim", [((64, 576), 1), ((64, 576), 0), ((13, 7), 1), ((6, 5, 3, 3), 1), ((37, 5), 0)]
)
def test_triton_mask_on_cuda_matches_cpu(shape, dim, dtype, monkeypatch):
    monkeypatch.setenv("FST_TRITON_MASKS", "1")
    torch.manual_seed(0)
    for a in (torch.randn(shape), torch.randint(-2, 3, shape).float()):  # the second: ties
        a = a.to(dtype)
        got = nm_mask(a.cuda(), dim=dim).cpu()
        assert torch.equal(got, nm_mask(a, dim=dim)), (shape, dim, dtype)


def _step(model, opt, x, y):
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


@needs_sparse_tensor_cores
@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_fst_step_replayed_as_cuda_graph_matches_eager(backend):
    models = []
    torch.manual_seed(0)
    x = torch.randn(16, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,), device="cuda")
    for graphed in (False, True):
        torch.manual_seed(0)
        model = fst.sparsify(torchvision.models.resnet18(num_classes=10), "fst", backend)
        model = model.cuda().to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):  # warm-up (sparse24 times and checks its kernels here)
            opt.zero_grad(set_to_none=True)
            _step(model, opt, x, y)
        if graphed:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                opt.zero_grad(set_to_none=True)
                _step(model, opt, x, y)
            torch.cuda.current_stream().wait_stream(side)
            opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                _step(model, opt, x, y)
            for _ in range(2):
                graph.replay()
        else:
            for _ in range(3):  # as many steps as the side warm-up + 2 replays (capture runs none)
                opt.zero_grad(set_to_none=True)
                _step(model, opt, x, y)
        torch.cuda.synchronize()
        models.append(model)
    eager, graphed = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models)
    err = float((eager - graphed).abs().max() / eager.abs().max())
    assert err < 1e-2, err
