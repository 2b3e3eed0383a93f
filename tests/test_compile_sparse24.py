"""``sparse24`` under torch.compile, on CPU with :class:`fst.ops.cslt.EmulatedGemm`.

Each sparse GEMM is one call of the custom op ``fst::sparse24_mm`` in the graph (compress +
multiply at run time; the compressed operand has no fake kernel and never enters a graph).
A layer's kernels are decided on its first input of a new shape, eagerly (they are timed):
once decided, forward and backward trace with no graph break. A fake timer that prefers the
sparse kernels makes every layer that can run one do so (on a CPU, dense would win).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fst
from fst.compile import compile_model, eager_first_calls
from fst.layers import sparse_layers
from fst.masks import nm_mask
from fst.ops import BACKENDS
from fst.ops.cslt import EmulatedGemm, SparseGemmError, gemm_of
from fst.strategies import STRATEGIES
from tests.test_compile import MODELS, aot_eager_steps, assert_same, run_steps, sparse_model

BE = BACKENDS.get("sparse24")
KEYS = [k for k in STRATEGIES if STRATEGIES.get(k).traceable]  # resprop runs eagerly by design
OP = torch.ops.fst.sparse24_mm.default


def prefer_sparse(fn, device, label):
    fn()
    return 1.0 if label.endswith(":dense") else 0.0


def op_calls(graphs) -> int:
    """Calls of the custom op in the graphs and their forward/backward subgraphs."""
    return sum(
        n.target is OP for g in graphs for sub in g.modules() if hasattr(sub, "graph")
        for n in sub.graph.nodes
    )  # fmt: skip


def sparse_routes() -> int:
    return sum(
        1
        for rec in BE.layers.values()
        for r in rec.routes.values()
        if not rec.fallback and not r.is_dense
    )


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def mixed_model(model: str, keys: list[str]) -> tuple[nn.Module, torch.Tensor]:
    """``model`` with its sparse layers on ``keys`` in turn (one compile covers them all)."""
    build, shape = MODELS[model]
    torch.manual_seed(0)
    m = fst.sparsify(build(), keys[0], "sparse24", decay=0.05).train()  # + ViT token layouts
    for i, (_, layer) in enumerate(list(sparse_layers(m))):
        fst.sparsify(layer, keys[i % len(keys)], "sparse24", decay=0.05)
    return m, torch.randn(shape)


# Stateless strategies that reach sparse24's own layers, each on some layer of each model.
# The others: "dense" and the stateful ones (their masks are held by a sparsifier) run as
# native, "resprop" eagerly by design (tests/test_compile.py covers both paths).
MIXED = [k for k in KEYS if not STRATEGIES.get(k).is_dense and not STRATEGIES.get(k).stateful]
CASES = {
    "resnet18": ("resnet18", MIXED),  # 13 layers: every key at least once
    "vit-a": ("vit", MIXED[: len(MIXED) // 2]),  # 6 layers a ViT
    "vit-b": ("vit", MIXED[len(MIXED) // 2 :]),
}
STATEFUL = {"vit-asp": ("vit", "asp")}  # held masks: sparse24 hands the layer to native


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES) + list(STATEFUL))
def test_no_graph_breaks_once_routes_are_decided(case):
    """explain (forward; each autograd.Function's backward traced with it): one graph."""
    with BE.emulate(timer=prefer_sparse):
        m, x = (
            mixed_model(*CASES[case])
            if case in CASES
            else sparse_model(*STATEFUL[case], "sparse24")
        )
        m(x).square().sum().backward()  # eager: each layer times and checks its kernels
        out = torch._dynamo.explain(m)(x)
        reasons = [f"{b.reason} at {b.user_stack[-1:]}" for b in out.break_reasons]
        assert out.graph_break_count == 0, reasons
        assert out.graph_count == 1
        assert (op_calls(out.graphs) > 0) == (sparse_routes() > 0) == (case in CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_matches_eager(case):
    """AOTAutograd's forward and backward graphs (``aot_eager``) against eager, 2 steps."""
    with BE.emulate(timer=prefer_sparse):
        m, x = mixed_model(*CASES[case])
        mc = copy.deepcopy(m)  # shares the backend (and so this emulate())
        eager = run_steps(m, x)
        mc(x).square().sum().backward()  # decide the copy's routes (its own weights)
        compiled = aot_eager_steps(mc, x)
        assert sparse_routes() > 0
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


class Small(nn.Module):
    """A 3x3 conv (im2col/taps), a strided 3x3, a 1x1 (gemm) and a Linear (gemm)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1)
        )
        self.pw = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12 * 3 * 5, 4)

    def forward(self, x):
        return self.head(self.pw(self.body(x)).flatten(1))


def small_pair():
    torch.manual_seed(0)
    m = fst.sparsify(Small(), "fst", "sparse24", decay=0.05).train()
    return m, copy.deepcopy(m), torch.randn(5, 3, 5, 9)


def test_first_compiled_call_decides_then_no_breaks():
    """Plain torch.compile: the first call breaks the graph at each undecided layer (the
    decision runs eagerly) and still computes eager's numbers; later calls break no more."""
    counters = torch._dynamo.utils.counters
    with BE.emulate(timer=prefer_sparse):
        m, mc, x = small_pair()
        eager = run_steps(m, x, steps=3)
        compiled = torch.compile(mc, backend="aot_eager")
        counters.clear()
        first = run_steps(compiled, x, steps=1)
        reasons = list(counters["graph_break"])
        assert reasons and all("torch.compiler.disable" in r for r in reasons), reasons
        counters.clear()
        later = run_steps(compiled, x, steps=2)
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert sparse_routes() == 2 * 4  # 4 layers each, both models
    assert_same(eager, first + later, rtol=1e-4, atol=1e-5)


def test_eager_first_calls_then_one_graph():
    """fst.compile's way: the first call of an input signature runs eagerly (kernels are
    decided outside any graph), the second compiles the whole model as one graph."""
    counters = torch._dynamo.utils.counters
    with BE.emulate(timer=prefer_sparse):
        m, mc, x = small_pair()
        eager = run_steps(m, x, steps=2)
        mc.compile(backend="aot_eager")
        eager_first_calls(mc)
        counters.clear()
        first = run_steps(mc, x, steps=1)
        assert not counters["frames"] and not counters["graph_break"]  # nothing compiled
        later = run_steps(mc, x, steps=1)
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] == 1
        with torch.no_grad():  # a new signature (no dX: other routes) runs eagerly again
            counters.clear()
            mc(x)
            assert not counters["frames"]
    assert_same(eager, first + later, rtol=1e-4, atol=1e-5)
    assert compile_model(fst.sparsify(Small(), "fst", "sparse24"), "default")._compiled_call_impl
    native = compile_model(fst.sparsify(Small(), "fst"), "default")
    assert not hasattr(native._compiled_call_impl, "seen")  # only sparse24 needs it


@pytest.mark.parametrize(
    "m, k, n, transpose, bias, col_major",
    [
        (20, 37, 13, True, True, True),  # M, K, N all padded; B column-major (X.t())
        (5, 6, 3, False, False, False),  # everything smaller than one aligned tile
        (16, 32, 8, True, False, False),  # aligned: no padding
        (33, 16, 17, False, True, True),
    ],
)
def test_custom_op_fake_matches_real(m, k, n, transpose, bias, col_major):
    gemm = EmulatedGemm()
    a = torch.randn(m, k, dtype=torch.float64)
    a = a * nm_mask(a, dim=1)
    b = torch.randn(n, k, dtype=torch.float64).t() if col_major else torch.randn(k, n).double()
    bias_t = torch.randn(m, dtype=torch.float64) if bias else None
    args = (a, b, bias_t, transpose, gemm.handle)
    real = OP(*args)
    want = a @ b + (0 if bias_t is None else bias_t[:, None])
    torch.testing.assert_close(real, want.t() if transpose else want)
    assert real.is_contiguous() and gemm.calls == {"compress": 1, "mm": 1}
    with torch._subclasses.FakeTensorMode() as mode:
        fake = OP(*(mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args))
    assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype)
    torch.library.opcheck(OP, args)  # schema, fake vs real, AOT with dynamic shapes
    with pytest.raises(SparseGemmError, match="K differs"), torch._subclasses.FakeTensorMode():
        OP(torch.empty(m, k + 4, dtype=torch.float64), torch.empty(k, n).double(), None, False,
           gemm.handle)  # fmt: skip


def test_dead_gemm_handle_names_the_fix():
    handle = EmulatedGemm().handle  # nothing holds it: collected
    with pytest.raises(SparseGemmError, match=r"torch._dynamo.reset\(\)"):
        gemm_of(handle)
    gemm = EmulatedGemm()
    assert gemm_of(gemm.handle) is gemm and copy.deepcopy(gemm).handle != gemm.handle
