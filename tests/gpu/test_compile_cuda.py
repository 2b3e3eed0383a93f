"""``torch.compile`` on a real GPU: sparse layers trace whole (no graph breaks) under bf16
autocast with channels-last, and a compiled fst step equals the eager step.

``sparse24`` runs with ``mode="sparse"`` here (its first sparse kernel wherever one may run, no
timing), so the cuSPARSELt kernels are inside the compiled graph; with its default timing most
layers of a small model pick the masked dense kernel and the test would not exercise them.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import fst
from fst.compile import compile_model
from fst.ops.base import BACKENDS
from tests.gpu.conftest import needs_sparse_tensor_cores, rel_err

pytestmark = [pytest.mark.gpu]


@pytest.fixture
def sparse24_sparse_mode():
    be = BACKENDS.get("sparse24")
    saved = be.mode
    be.mode = "sparse"
    be.reset()
    yield be
    be.mode = saved
    be.reset()


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(backend: str) -> nn.Module:
    torch.manual_seed(0)
    model = fst.sparsify(torchvision.models.resnet18(num_classes=10), "fst", backend)
    return model.cuda().to(memory_format=torch.channels_last).train()


def _inputs():
    torch.manual_seed(1)
    x = torch.randn(16, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (16,), device="cuda")


def _loss_and_grads(model, fwd, x, y):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        loss = nn.functional.cross_entropy(fwd(x), y)
    loss.backward()
    return loss.detach().float(), [p.grad.detach().float().clone() for p in model.parameters()]


@needs_sparse_tensor_cores
@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_no_graph_breaks_on_cuda(backend, sparse24_sparse_mode):
    model = _model(backend)
    x, y = _inputs()
    _loss_and_grads(model, model, x, y)  # eager warm-up: sparse24 decides its kernels here

    def fwd(inp):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return model(inp)

    out = torch._dynamo.explain(fwd)(x)
    reasons = [f"{b.reason} at {b.user_stack[-1:]}" for b in out.break_reasons]
    assert out.graph_break_count == 0, reasons
    assert out.graph_count == 1


@needs_sparse_tensor_cores
@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_compiled_step_matches_eager_on_cuda(backend, sparse24_sparse_mode):
    x, y = _inputs()
    eager = _model(backend)
    loss_e, grads_e = _loss_and_grads(eager, eager, x, y)
    model = compile_model(_model(backend), "default")  # what trainer.compile=default does
    for call in range(3):  # call 0 runs eagerly (sparse24 decides its kernels), then compiled
        loss_c, grads_c = _loss_and_grads(model, model, x, y)
        assert rel_err(loss_c, loss_e) < 2e-2, call
        g_e = torch.cat([g.flatten() for g in grads_e])
        g_c = torch.cat([g.flatten() for g in grads_c])
        assert rel_err(g_c, g_e) < 5e-2, call
