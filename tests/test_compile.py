"""torch.compile: no graph breaks inside sparse layers, compiled == eager, in-place compile.

Models are shrunk so dynamo traces them in seconds: ResNet-18's block structure with one
BasicBlock per stage (stem, strided and 1x1 downsample convs, odd feature-map widths 9, 5, 3
for the fixed mask's odd-width path) and a one-block timm ViT (5 tokens: an odd token count).

``torch._dynamo.explain`` traces the forward; dynamo traces each custom autograd.Function's
backward at the same time (a backward it cannot trace is reported as a break at the call), so
zero breaks means forward and backward are whole graphs. The numerics tests then run forward
and backward through AOTAutograd (``aot_eager``: the graphs inductor would get, without its
C++ compile) and compare with eager; one test compiles with inductor itself.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

import fst
from fst.compile import compile_mode, compile_model, compile_options, draws_random, is_compiled
from fst.strategies import STRATEGIES

KEYS = list(STRATEGIES)
BACKENDS = ["native", "reference"]


def small_resnet18() -> nn.Module:
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], 5)


def small_vit() -> nn.Module:
    return timm.create_model("test_vit", depth=1, img_size=16, patch_size=8, num_classes=5)


MODELS = {
    "resnet18": (small_resnet18, (2, 3, 36, 36)),  # widths 18 -> 9, 5, 3, 2
    "vit": (small_vit, (2, 3, 16, 16)),  # 4 patches + class token
}


def sparse_model(model: str, key: str, backend: str) -> tuple[nn.Module, torch.Tensor]:
    """A sparse model; a stateful strategy's sparsifier is built and stepped once, so its
    layers hold their state (masks, the previous gradient's pick) as in training."""
    build, shape = MODELS[model]
    torch.manual_seed(0)
    options = {"im2col_step": 1} if key == "fst_released" else {}  # 2 chunks: 2 draws a layer
    m = fst.sparsify(build(), key, backend, decay=0.05, **options).train()
    x = torch.randn(shape)
    sparsifier = with_sparsifier(m)
    if sparsifier is not None:
        m(x).square().sum().backward()
        sparsifier.step()
        m.zero_grad(set_to_none=True)
    return m, x


def with_sparsifier(m: nn.Module):
    """The model's sparsifier (None for stateless strategies), kept on the model for the tests:
    masks are fixed for the schedule's length (lr 0: the weights stay)."""
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    m._test_sparsifier = fst.build_sparsifier(m, opt, total_steps=8, steps_per_epoch=4, seed=0)
    return m._test_sparsifier


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("model", list(MODELS))
def test_no_graph_breaks(model, key, backend):
    m, x = sparse_model(model, key, backend)
    out = torch._dynamo.explain(m)(x)
    reasons = [f"{b.reason} at {b.user_stack[-1:]}" for b in out.break_reasons]
    if not STRATEGIES.get(key).traceable:  # ReSprop: its layers run eagerly, by design
        assert out.graph_break_count > 0
        assert all("torch.compiler.disable" in b.reason for b in out.break_reasons), reasons
        return
    assert out.graph_break_count == 0, reasons
    assert out.graph_count == 1
    # the sparse layers are in the graph as autograd.Function calls, forward and backward
    ops = [str(op) for g in out.ops_per_graph for op in g]
    assert any("autograd_function_apply" in op for op in ops)


def run_steps(m: nn.Module, x: torch.Tensor, steps: int = 2):
    """``steps`` forward/backward passes (seeded: fst_released draws), outputs and grads."""
    outs = []
    for i in range(steps):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(100 + i)
        y = m(x)
        y.square().sum().backward()
        outs.append([y.detach()] + [p.grad.clone() for p in m.parameters()])
        if getattr(m, "_test_sparsifier", None) is not None:  # stateful: the next step's state
            m._test_sparsifier.step()
    return outs


def assert_same(eager, compiled, **tol):
    for step_e, step_c in zip(eager, compiled):
        for i, (a, b) in enumerate(zip(step_e, step_c)):
            torch.testing.assert_close(b, a, **tol, msg=lambda s, i=i: f"tensor {i}: {s}")


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("model", list(MODELS))
def test_compiled_matches_eager(model, key):
    """The native backend (the one to compile; the reference is the eager test oracle)."""
    m, x = sparse_model(model, key, "native")
    mc = copy.deepcopy(m)
    eager = run_steps(m, x)
    compiled = aot_eager_steps(mc, x, no_breaks=STRATEGIES.get(key).traceable)
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


def aot_eager_steps(m: nn.Module, x: torch.Tensor, no_breaks: bool = True):
    """:func:`run_steps` of ``m`` compiled with ``aot_eager``; asserts no graph break if asked."""
    counters = torch._dynamo.utils.counters
    counters.clear()
    out = run_steps(torch.compile(m, backend="aot_eager"), x)
    if no_breaks:
        assert not counters["graph_break"], dict(counters["graph_break"])
    return out


class TwoStrategies(nn.Module):
    """fst layers (fixed mask, IR, odd width), fst_released layers (random draws), a Linear."""

    def __init__(self):
        super().__init__()
        self.fst = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1)
        )
        self.released = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8 * 3 * 5, 4)

    def forward(self, x):
        return self.head(self.released(self.fst(x)).flatten(1))


@pytest.mark.slow
def test_inductor_matches_eager_including_random_draws():
    torch.manual_seed(0)
    m = TwoStrategies()
    fst.sparsify(m.fst, "fst", decay=0.05)
    fst.sparsify(m.released, "fst_released", im2col_step=2)  # batch 5: chunks of 2, 2, 1
    fst.sparsify(m.head, "srste", decay=0.5)  # 2-D Linear: dW = mm, then the decay term
    x = torch.randn(5, 3, 5, 9)
    mc = compile_model(copy.deepcopy(m), "default")
    assert is_compiled(mc) and draws_random(mc)
    assert compile_options(mc, "default") == {"fallback_random": True}
    eager = run_steps(m, x)
    compiled = run_steps(mc, x)
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


def test_compile_in_place_keeps_state_dict_names():
    m, _ = sparse_model("resnet18", "fst", "native")
    names = list(m.state_dict())
    out = compile_model(m, "default")  # compiles lazily, at the first call
    assert out is m and is_compiled(m)
    assert list(m.state_dict()) == names and not any("_orig_mod" in k for k in names)
    assert compile_model(m, False) is m


def test_compile_mode_values():
    assert compile_mode(False) is None and compile_mode(None) is None
    assert compile_mode("false") is None
    assert compile_mode("default") == "default" and compile_mode("max-autotune") == "max-autotune"
    for bad in (True, "true", "reduce-overhead", 1):
        with pytest.raises(ValueError, match="valid values: false"):
            compile_mode(bad)


def test_only_random_rules_ask_for_eager_random():
    m, _ = sparse_model("resnet18", "fst", "native")
    assert not draws_random(m) and compile_options(m, "default") == {}
    m, _ = sparse_model("resnet18", "fst_released", "native")
    assert draws_random(m)
    forced = fst.sparsify(small_resnet18(), "fst_released", x_patterns="c")  # draws nothing
    assert not draws_random(forced)
    assert compile_options(m, "max-autotune")["max_autotune"] is True


@pytest.mark.slow
def test_bf16_autocast_channels_last_compiles_whole():
    """The GPU set-up (bf16 autocast, channels_last), on the CPU: one graph, backward runs."""
    m, x = sparse_model("resnet18", "fst", "native")
    m = m.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch._dynamo.explain(m)(x)
    assert out.graph_break_count == 0, [b.reason for b in out.break_reasons]
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    mc = torch.compile(m, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mc(x)
    y.float().square().sum().backward()
    assert not counters["graph_break"]
    assert y.dtype == torch.bfloat16 and all(p.grad.dtype == torch.float32 for p in m.parameters())
