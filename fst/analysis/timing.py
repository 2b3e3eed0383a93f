"""Table 2 (time to 2:4-sparsify W, dY and im2col X^T) and Table 6 (per-step overhead).

Table 2 shapes are those of ResNet-18's second conv (``layer1.0.conv1``: 64 -> 64 channels,
3x3, 56x56 output) at batch ``N``:

- ``W``:    ``[Cout, Cin*k*k] = [64, 576]``, groups along dim 1 (Eq. 1's reduction dim).
- ``dY``:   ``[N, Cout, H*W]``, groups along H*W (the reduction dim ``N*H*W`` of Eq. 3;
  a group of 4 never straddles two images because ``H*W`` is a multiple of 4).
- ``X^T``:  the im2col matrix ``[N, Cin*k*k, H*W]`` (``F.unfold``), groups along H*W, as the
  fixed mask of Eq. 7 and the Sparse Tensor Core require.

Three implementations are timed: the naive sort-based one the paper describes (``torch.sort``
of ``|t|`` in each group of 4, zero the two smallest), ``fst.masks.nm_mask`` (pairwise
comparisons, no sort), and for X^T the fixed mask of Eq. 7 (keep every other column).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fst
from fst.layers import SparseConv2d, sparse_layers
from fst.masks import nm_mask
from fst.ops.native import ir_half
from fst.rules import INPUT_GRAD_RULES


def naive_sort_mask(t: torch.Tensor, dim: int = -1, n: int = 2, m: int = 4) -> torch.Tensor:
    """Sort-based N:M magnitude mask: sort ``|t|`` inside each group of ``m`` along ``dim``.

    The baseline of the paper's Table 2. ``t.shape[dim]`` must be a multiple of ``m``.
    Returns a bool keep-mask shaped like ``t``.
    """
    dim = dim % t.dim()
    if t.shape[dim] % m:
        raise ValueError(
            f"naive_sort_mask needs size {t.shape[dim]} along dim {dim} to be a multiple of {m}"
        )
    x = t.detach().abs().movedim(dim, -1)
    g = x.reshape(*x.shape[:-1], -1, m)
    idx = torch.sort(g, dim=-1, descending=True).indices[..., :n]
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return keep.reshape(x.shape).movedim(-1, dim)


def fixed_column_mask(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Eq. 7's fixed mask: keep every other entry along ``dim`` (indices 0, 2, 4, ...).

    2:4 along ``dim`` by construction (two kept in every four). Returns ``x`` pruned (not a mask):
    one strided multiply is the whole cost, which is the point of Table 2.
    """
    keep = torch.zeros(x.shape[dim], dtype=x.dtype, device=x.device)
    keep[0::2] = 1
    shape = [1] * x.dim()
    shape[dim] = -1
    return x * keep.view(shape)


def time_fn(
    fn: Callable[[], object], repeats: int = 10, warmup: int = 2, device: str = "cpu"
) -> dict[str, float]:
    """Median and spread (seconds) of ``repeats`` calls after ``warmup`` calls.

    Synchronises CUDA around each call so GPU time is measured, not launch time.
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "repeats": repeats,
    }


def second_conv_operands(
    batch: int, device: str = "cpu", seed: int = 0
) -> dict[str, tuple[torch.Tensor, int]]:
    """Random operands shaped as ResNet-18's second conv: ``{name: (tensor, group_dim)}``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(64, 64 * 9, generator=g)
    x = torch.randn(batch, 64, 56, 56, generator=g)
    dy = torch.randn(batch, 64, 56 * 56, generator=g)
    xt = F.unfold(x, kernel_size=3, padding=1)  # [N, 576, 3136]
    del x
    return {
        "W": (w.to(device), 1),
        "dY": (dy.to(device), -1),
        "X^T": (xt.to(device), -1),
    }


def table2(batch: int, device: str = "cpu", repeats: int = 5, warmup: int = 1) -> list[dict]:
    """Time each sparsifier on each operand; rows ``{object, shape, implementation, device, ...}``."""
    ops = second_conv_operands(batch, device)
    rows = []
    for obj, (t, dim) in ops.items():
        impls: dict[str, Callable[[], object]] = {
            "naive sort (paper)": lambda t=t, dim=dim: t * naive_sort_mask(t, dim),
            "fst.masks.nm_mask": lambda t=t, dim=dim: t * nm_mask(t, dim),
        }
        if obj == "X^T":
            impls["fixed mask (Eq. 7)"] = lambda t=t, dim=dim: fixed_column_mask(t, dim)
        for name, fn in impls.items():
            r = time_fn(fn, repeats, warmup, device)
            rows.append(
                {
                    "object": obj,
                    "shape": "x".join(map(str, t.shape)),
                    "numel": t.numel(),
                    "implementation": name,
                    "device": device,
                    "batch": batch,
                    **r,
                }
            )
    return rows


def table6(
    batch: int,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    res: int = 224,
    strategy: str = "fst",
) -> dict:
    """Per-iteration time of S(W), S(W^T) and the IR shift beside one training step.

    ResNet-18 (torchvision, 1000 classes) at ``batch`` x 3 x ``res`` x ``res``, converted with
    ``fst.sparsify(strategy)`` (native backend); a dense copy gives the reference step. Each
    overhead is summed over every sparse layer, using the library's own functions:

    - ``S(W)``: the Eq. 1 rule's mask applied to each weight (2:4 along Cin*k*k);
    - ``S(W^T)``: the ``nm_wt`` Eq. 2 rule's weight (2:4 along Cout of ``[Cout, Cin*k*k]``);
    - ``shift(dY)``: ``fst.ops.native.ir_half(dY, 1.0, dim=W)``, the fused shift-and-add of
      Eq. 10 over the half F keeps, on each conv's dY shape (convs with a fixed X^T mask).

    Returns ``{"train_step_<strategy>", "train_step_dense", "S(W)", "S(W^T)", "shift(dY)",
    "total"}``, each a :func:`time_fn` dict, plus ``batch`` and ``res``.
    """
    dev = torch.device(device)
    torch.manual_seed(0)
    dense = torchvision.models.resnet18(num_classes=1000).to(dev).train()
    sparse = torchvision.models.resnet18(num_classes=1000)
    sparse.load_state_dict(dense.state_dict())
    sparse = fst.sparsify(sparse, strategy, "native").to(dev).train()
    x = torch.randn(batch, 3, res, res, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def stepper(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        return step

    out_shapes: dict[str, torch.Size] = {}
    layers = list(sparse_layers(sparse))
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: out_shapes.__setitem__(n, o.shape))
        for n, m in layers
    ]
    result = {"batch": batch, "res": res}
    result[f"train_step_{strategy}"] = time_fn(stepper(sparse), repeats, warmup, device)
    for h in hooks:
        h.remove()
    result["train_step_dense"] = time_fn(stepper(dense), repeats, warmup, device)

    weights = [(m.weight.detach(), m.plan) for _, m in layers]
    dys = [
        torch.randn(out_shapes[n], device=dev)
        for n, m in layers
        if isinstance(m, SparseConv2d) and m.plan.weight_grad == "fixed"
    ]
    s_wt_rule = INPUT_GRAD_RULES.get("nm_wt")

    def s_w():
        for w, plan in weights:
            w * plan.rules[0].mask(w, plan)

    def s_wt():
        for w, plan in weights:
            s_wt_rule.weight(w, None, plan)

    def shift():
        for d in dys:
            ir_half(d, 1.0, dim=3)

    reps = max(repeats, 10)
    with torch.no_grad():
        result["S(W)"] = time_fn(s_w, reps, 2, device)
        result["S(W^T)"] = time_fn(s_wt, reps, 2, device)
        result["shift(dY)"] = time_fn(shift, reps, 2, device)
    result["total"] = {
        "median_s": sum(result[k]["median_s"] for k in ("S(W)", "S(W^T)", "shift(dY)"))
    }
    result["layers"] = len(layers)
    result["shifted_layers"] = len(dys)
    return result
