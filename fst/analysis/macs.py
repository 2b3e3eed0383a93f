"""Figure 2: MACs of each conv layer's three GEMMs, dense and under each sparsity strategy.

A conv layer ``<W, X>`` (paper Sec. 3) runs three GEMMs per training step:

- Eq. 1, forward:          ``Y = W X``        ``[Cout, Cin*k*k] @ [Cin*k*k, N*H*W]``
- Eq. 2, input gradient:   ``dX = W^T dY``    ``[Cin*k*k, Cout] @ [Cout, N*H*W]``
- Eq. 3, weight gradient:  ``dW = dY X^T``    ``[Cout, N*H*W] @ [N*H*W, Cin*k*k]``

Each costs ``N * Cout * (Cin/groups) * k*k * Hout*Wout`` MACs. A Sparse Tensor Core GEMM with
one 2:4 operand does half the MACs, so the *effective* MACs of an equation whose strategy
prunes an operand are half the dense count. Which equations a strategy prunes is read from the
strategy registry (``fst.strategies.STRATEGIES``), not restated here.

The network input needs no gradient, so the first conv has no Eq. 2 (``first_input_grad``);
that is what autograd (and ``torch.utils.flop_counter``) does.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from fst.strategies import STRATEGIES

EQUATIONS = ("eq1", "eq2", "eq3")
EQ_LABELS = {"eq1": "forward (Eq. 1)", "eq2": "input grad (Eq. 2)", "eq3": "weight grad (Eq. 3)"}


@dataclass
class ConvGEMM:
    """Shapes of one conv layer in one forward pass (``batch`` images)."""

    name: str
    cin: int
    cout: int
    kernel: int  # kh * kw
    groups: int
    hout: int
    wout: int
    batch: int

    @property
    def macs(self) -> int:
        """MACs of one of the three GEMMs (they are equal)."""
        return (
            self.batch * self.cout * (self.cin // self.groups) * self.kernel * self.hout * self.wout
        )


def conv_gemms(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> list[ConvGEMM]:
    """Run one forward pass on zeros of ``input_size`` and record every ``nn.Conv2d``.

    Returns layers in execution order (the order the hooks fire).
    """
    rows: list[ConvGEMM] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: nn.Conv2d, inp, out):
        rows.append(
            ConvGEMM(
                name=names[mod],
                cin=mod.in_channels,
                cout=mod.out_channels,
                kernel=mod.kernel_size[0] * mod.kernel_size[1],
                groups=mod.groups,
                hout=out.shape[-2],
                wout=out.shape[-1],
                batch=out.shape[0],
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not rows:
        raise ValueError("the model has no nn.Conv2d layers; Figure 2 counts conv MACs only")
    return rows


def dense_macs(layers: list[ConvGEMM], first_input_grad: bool = False) -> list[dict]:
    """Per layer: ``{"name", "shape", "eq1", "eq2", "eq3"}`` dense MACs."""
    out = []
    for i, g in enumerate(layers):
        row = asdict(g)
        row["eq1"] = g.macs
        row["eq2"] = g.macs if (i > 0 or first_input_grad) else 0
        row["eq3"] = g.macs
        out.append(row)
    return out


def effective_macs(
    layers: list[ConvGEMM],
    sparse_eqs: tuple[bool, bool, bool],
    exclude: tuple[str, ...] = (),
    first_input_grad: bool = False,
) -> list[dict]:
    """Per layer effective MACs: an equation with a 2:4 operand counts half.

    Args:
        sparse_eqs: whether Eq. 1, 2, 3 have a 2:4 operand under the strategy.
        exclude: fnmatch patterns of layer names kept dense (as ``fst.sparsify(exclude=...)``);
            grouped convs are never sparsified (``fst.sparsify`` handles ``groups=1`` only).
    """
    rows = dense_macs(layers, first_input_grad)
    for row in rows:
        dense = row["groups"] != 1 or any(fnmatch.fnmatchcase(row["name"], p) for p in exclude)
        for eq, sparse in zip(EQUATIONS, sparse_eqs):
            if sparse and not dense:
                row[eq] = row[eq] / 2
    return rows


def strategy_sparse_eqs(strategy: str) -> tuple[bool, bool, bool]:
    """Which of Eq. 1-3 get a 2:4 operand under ``strategy``: each GEMM rule's
    :meth:`fst.rules.Rule.tensor_core` (SR-STE's ``S(W)^T`` and the release's regrouped Eq. 2
    weight are sparse but not 2:4 along Cout, so they count dense)."""
    plan = STRATEGIES.get(strategy)
    return tuple(rule.tensor_core(plan) for rule in plan.rules)


def macs_by_strategy(
    layers: list[ConvGEMM],
    strategies: list[str],
    exclude: tuple[str, ...] = (),
    first_input_grad: bool = False,
) -> list[dict]:
    """One row per strategy: effective MACs of Eq. 1-3 summed over layers, plus shares.

    Keys: ``strategy, pruned_eqs, sparse_eqs, eq1, eq2, eq3, total, backward_share,
    fraction_of_dense, speedup_bound``: ``pruned_eqs`` lists the GEMMs with a pruned operand,
    ``sparse_eqs`` those whose pruned operand is 2:4 along the reduction dim (counted half)
    (``speedup_bound`` = dense total / effective total, the MAC-count ceiling on speedup).
    """
    dense_total = sum(r["eq1"] + r["eq2"] + r["eq3"] for r in dense_macs(layers, first_input_grad))
    out = []
    for s in strategies:
        eqs = strategy_sparse_eqs(s)
        pruned = tuple(rule.prunes for rule in STRATEGIES.get(s).rules)
        rows = effective_macs(layers, eqs, exclude, first_input_grad)
        plan = STRATEGIES.get(s)
        for row, g in zip(rows, dense_macs(layers, first_input_grad)):
            for eq, rule in zip(EQUATIONS, plan.rules):  # shape rules (ASP: apex's 8x16)
                if rule.skips(plan, (g["cout"], g["cin"] // g["groups"])):
                    row[eq] = g[eq]
        if getattr(STRATEGIES.get(s), "dense_first_conv_weight", False):
            first = dense_macs(layers[:1], first_input_grad)[0]
            rows[0]["eq1"], rows[0]["eq2"] = first["eq1"], first["eq2"]  # X is still masked (Eq. 3)
        tot = {eq: float(sum(r[eq] for r in rows)) for eq in EQUATIONS}
        total = sum(tot.values())
        out.append(
            {
                "strategy": s,
                "pruned_eqs": "".join("123"[i] for i, b in enumerate(pruned) if b) or "-",
                "sparse_eqs": "".join("123"[i] for i, b in enumerate(eqs) if b) or "-",
                **tot,
                "total": total,
                "backward_share": (tot["eq2"] + tot["eq3"]) / total,
                "fraction_of_dense": total / dense_total,
                "speedup_bound": dense_total / total,
            }
        )
    return out


def plot_macs(
    per_layer: list[dict], per_strategy: list[dict], path, title_suffix: str = ""
) -> None:
    """Two panels: (a) dense MACs per conv layer and equation; (b) effective MACs per strategy."""
    fig = Figure(figsize=(17, 6))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.7, 1]})
    names = [r["name"] for r in per_layer]
    x = np.arange(len(names))
    width = 0.27
    for i, eq in enumerate(EQUATIONS):
        ax1.bar(x + (i - 1) * width, [r[eq] / 1e6 for r in per_layer], width, label=EQ_LABELS[eq])
    ax1.set_xticks(x, names, rotation=70, ha="right", fontsize=8)
    ax1.set_ylabel("dense MACs per image (millions)")
    ax1.set_xlabel("conv layer (execution order)")
    ax1.set_title("(a) dense MACs of each conv layer's GEMMs" + title_suffix)
    ax1.set_ylim(0, max(r["eq1"] for r in per_layer) / 1e6 * 1.2)
    ax1.legend(ncol=3, loc="upper center")

    strat = [r["strategy"] for r in per_strategy]
    xs = np.arange(len(strat))
    bottom = np.zeros(len(strat))
    for eq in EQUATIONS:
        vals = np.array([r[eq] / 1e9 for r in per_strategy])
        ax2.bar(xs, vals, 0.6, bottom=bottom, label=EQ_LABELS[eq])
        bottom += vals
    for xi, r, b in zip(xs, per_strategy, bottom):
        ax2.text(
            xi,
            b,
            f"{r['speedup_bound']:.2f}x\n{100 * r['backward_share']:.0f}%",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax2.set_xticks(xs, strat, rotation=45, ha="right")
    ax2.set_ylabel("effective MACs per image (billions)")
    ax2.set_xlabel("strategy (a 2:4 GEMM counts half); above bars: dense/effective, backward share")
    ax2.set_title("(b) all conv layers, per strategy")
    ax2.set_ylim(0, bottom.max() * 1.35)
    ax2.legend(fontsize=8, loc="upper right", ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
