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


def _loss_and_grads(model, fwd, x, y, precision: str = "bf16"):
    model.zero_grad(set_to_none=True)
    bf16 = precision == "bf16"
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False, enabled=bf16):
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


def _gap(build, precision: str) -> tuple[float, float, str]:
    """Loss and gradient gap of a compiled step (through ``compile_model``) to the eager step.

    Two models from the same seed; the compiled one is called three times (``sparse24``'s
    first call runs eagerly and decides its kernels). Returns the largest loss gap, the largest
    gradient gap (rel. to the largest gradient entry of the whole model) and the parameter
    where it is.
    """
    x, y = _inputs()
    eager = build()
    loss_e, grads_e = _loss_and_grads(eager, eager, x, y, precision)
    model = compile_model(build(), "default")  # what trainer.compile=default does
    names = [n for n, _ in model.named_parameters()]
    scale = max(float(g.abs().max()) for g in grads_e)
    worst_loss, worst_grad, where = 0.0, 0.0, ""
    for _ in range(3):
        loss_c, grads_c = _loss_and_grads(model, model, x, y, precision)
        worst_loss = max(worst_loss, rel_err(loss_c, loss_e))
        for name, ge, gc in zip(names, grads_e, grads_c):
            gap = float((gc - ge).abs().max()) / scale
            if gap > worst_grad:
                worst_grad, where = gap, name
    return worst_loss, worst_grad, where


def _dense_model() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    return model.cuda().to(memory_format=torch.channels_last).train()


@pytest.fixture(scope="module")
def dense_bf16_gap():
    """How far a compiled dense ResNet-18 step is from the eager one in bf16: the floor."""
    torch._dynamo.reset()
    return _gap(_dense_model, "bf16")


@needs_sparse_tensor_cores
@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_compiled_step_matches_eager_on_cuda(backend, sparse24_sparse_mode, dense_bf16_gap):
    """bf16 rounds differently once inductor fuses, and the gradient of a small-batch ResNet
    amplifies it (batch norm's backward subtracts means): the bound is the dense model's own
    compiled-vs-eager gap, with margin."""
    loss_gap, grad_gap, where = _gap(lambda: _model(backend), "bf16")
    d_loss, d_grad, d_where = dense_bf16_gap
    msg = f"{backend}: loss {loss_gap:.3g}, grad {grad_gap:.3g} at {where}; dense: "
    msg += f"loss {d_loss:.3g}, grad {d_grad:.3g} at {d_where}"
    print(msg)
    assert loss_gap <= 2 * d_loss + 1e-2, msg
    assert grad_gap <= 2 * d_grad + 2e-2, msg


@needs_sparse_tensor_cores
def test_compiled_fp32_step_matches_eager_on_cuda(no_tf32):
    """In fp32 without TF32 the compiled fst step equals the eager one to rounding."""
    loss_gap, grad_gap, where = _gap(lambda: _model("native"), "fp32")
    print(f"native fp32: loss {loss_gap:.3g}, grad {grad_gap:.3g} at {where}")
    assert loss_gap < 1e-4 and grad_gap < 1e-3, (loss_gap, grad_gap, where)
