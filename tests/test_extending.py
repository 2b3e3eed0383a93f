"""docs/extending.md's recipes, followed literally: a toy strategy, GEMM mode (rule), backend,
dataset, model and metric are registered, used, and unregistered again.

Each toy is what a contributor would write in the file the recipe names (shown in the comment
above it); here they live in one test module so the registries are left as they were found.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fst
from fst.data import DATASETS
from fst.engine.config import resolve_config
from fst.masks import nm_mask
from fst.metrics import METRICS, Metric
from fst.models import MODELS
from fst.ops import BACKENDS, Backend, build_backend
from fst.rules import FORWARD_RULES
from fst.rules.base import option, register
from fst.rules.forward import ForwardRule
from fst.strategies import STRATEGIES, Strategy
from fst.tasks import TASKS
from fst.types import DataBundle
from tests.conftest import compose

# ------------------------------------------------------------------------------------------
# Strategy, GEMM mode, backend: written against the API of fst.strategies / fst.rules /
# fst.ops as they are at this commit (see docs/extending.md, "Strategy, GEMM mode, backend").
# ------------------------------------------------------------------------------------------


# fst/rules/forward.py: an Eq. 1 mode, the largest |w| of every 2 along K (1:2, not 2:4), with
# one option of its own.
class ToyHalf(ForwardRule):
    key = "toy_half"
    operand = "W"
    toy_keep: int = option(1, "toy_half: entries of W kept in every 2 along K", choices=(1, 2))

    def formula(self, plan) -> str:
        return "H(W) X"

    def pattern(self, plan) -> str:
        return f"{self.toy_keep}:2"

    def mask(self, w, plan, abs_w=None, state=None):
        return nm_mask(w.reshape(w.shape[0], -1), dim=1, n=self.toy_keep, m=2).view(w.shape)


# fst/strategies.py: one STRATEGIES entry naming a rule per GEMM (+ configs/sparsity/toy.yaml).
def toy_strategy() -> Strategy:
    return Strategy("toy", forward="toy_half", input_grad="fwd")


# fst/ops/toy.py (+ its import in fst/ops/__init__.py, configs/backend/toy.yaml): a Backend
# subclass with conv2d and linear; this one counts its calls and runs another backend's
# arithmetic. Its setting (a keyword-only argument) is a key of its YAML.
class ToyBackend(Backend):
    name = "toy"

    def __init__(self, *, arithmetic: str = "reference"):
        self.arithmetic = BACKENDS.get(arithmetic)
        self.calls = 0

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        self.calls += 1
        return self.arithmetic.conv2d(x, weight, bias, geom, plan, decay, state)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        self.calls += 1
        return self.arithmetic.linear(x, weight, bias, plan, decay, state, tokens)


@pytest.fixture
def toy_gemm():
    register(ToyHalf)  # the decorator of the recipe
    STRATEGIES.register("toy", toy_strategy())
    BACKENDS.register("toy", ToyBackend())
    try:
        yield
    finally:
        BACKENDS.unregister("toy")
        STRATEGIES.unregister("toy")
        FORWARD_RULES.unregister("toy_half")


# ------------------------------------------------------------------------------------------
# Dataset, model, metric.
# ------------------------------------------------------------------------------------------


# fst/data/toy.py (+ its import in fst/data/__init__.py, configs/data/toy.yaml).
def build_toy_data(num_samples: int = 12, image_size: int = 8, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 3, image_size, image_size, generator=g)
    y = torch.arange(num_samples) % 3
    return DataBundle(TensorDataset(x, y), TensorDataset(x, y), num_classes=3)


# fst/models/toy.py (+ its import in fst/models/__init__.py, configs/model/toy.yaml).
def build_toy_model(num_classes: int | None = None, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


# fst/metrics/toy.py (+ its import in fst/metrics/__init__.py): the error rate in percent.
class ToyError(Metric):
    def reset(self) -> None:
        self.wrong, self.n = 0, 0

    def update(self, preds, targets) -> None:
        self.wrong += int((preds.argmax(1) != targets).sum())
        self.n += len(targets)

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("the validation loader is empty")
        return {"error": 100.0 * self.wrong / self.n}


@pytest.fixture
def toy_parts():
    DATASETS.register("toy", build_toy_data)
    MODELS.register("toy", build_toy_model)
    METRICS.register("toy", ToyError)
    try:
        yield
    finally:
        METRICS.unregister("toy")
        MODELS.unregister("toy")
        DATASETS.unregister("toy")


def _layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_toy_strategy_rule_and_backend_train(toy_gemm):
    torch.manual_seed(0)
    model = build_toy_model(num_classes=3)
    ref = fst.sparsify(build_toy_model(num_classes=3), "toy", "reference")
    ref.load_state_dict(model.state_dict())
    model = fst.sparsify(model, "toy", "toy")
    assert {m.strategy for m in _layers(model)} == {"toy"}
    assert {m.backend for m in _layers(model)} == {"toy"}
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    for net in (model, ref):
        F.cross_entropy(net(x), y).backward()
    assert BACKENDS.get("toy").calls == 2  # its Conv2d and its Linear, once each
    conv = model[0]
    w_fwd = conv.weight.detach() * nm_mask(
        conv.weight.detach().reshape(conv.weight.shape[0], -1), dim=1, n=1, m=2
    ).view(conv.weight.shape)
    torch.testing.assert_close(model(x), ref(x))
    torch.testing.assert_close(model[0](x), F.conv2d(x, w_fwd, conv.bias, padding=1))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert STRATEGIES.get("toy").describe()["eq1"] == "H(W) X"
    assert "H(W) X" in str(fst.summary(model))


def test_toy_rule_option_and_backend_setting(toy_gemm):
    """The rule's option is a strategy option (``sparsity.toy_keep``); the backend's setting a
    key of its YAML (``backend.arithmetic``), both with no other edit."""
    torch.manual_seed(0)
    toy = build_backend("toy", arithmetic="native")
    assert toy is not BACKENDS.get("toy") and toy.arithmetic is BACKENDS.get("native")
    with pytest.raises(TypeError, match="arithmetic"):
        build_backend("toy", arithmetc="native")
    model = fst.sparsify(build_toy_model(num_classes=3), "toy", toy, toy_keep=2)
    assert model[0].plan.rules[0].toy_keep == 2 and model[0].backend == "toy"
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model[0](x), F.conv2d(x, model[0].weight, model[0].bias, padding=1))
    assert toy.calls == 1
    with pytest.raises(ValueError, match="toy_keep"):
        fst.sparsify(build_toy_model(num_classes=3), "toy", toy, toy_keep=3)


def test_toy_dataset_model_and_metric_through_the_registries(toy_parts):
    cfg = compose([])  # the default run, with the toy data and model groups below
    cfg.data = {"name": "toy", "num_samples": 12, "image_size": 8, "batch_size": 4}
    cfg.model = {"name": "toy", "label": "toy", "num_classes": None, "width": 8}
    run = resolve_config(cfg)
    task = TASKS[run.task](run)
    data = task.build_data()
    assert task.num_classes == 3 and len(data.train) == 12
    model = task.build_model().eval()
    assert isinstance(model[-1], nn.Linear) and model[-1].out_features == 3
    loader = DataLoader(data.val, batch_size=4)
    task.metric = "toy"  # what a task class (or its data) names
    with torch.no_grad():
        got = task.evaluate(model, loader, torch.device("cpu"))
    x, y = data.val.tensors
    want = 100.0 * float((model(x).argmax(1) != y).sum()) / len(y)
    assert got == {"error": pytest.approx(want)}
    metric = METRICS["toy"].from_data(data)
    metric.update(torch.eye(3), torch.tensor([0, 1, 0]))
    assert metric.compute() == {"error": pytest.approx(100.0 / 3)}
