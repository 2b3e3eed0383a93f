"""Per-layer sparsity diagnostics: 2:4 validity of the GEMM operands, mask flip rate, mask time.

For each sparse layer whose Eq. 1 weight is pruned, ``MaskTracker.measure(model)`` recomputes the
forward mask from the current weights (the same function the layer uses), and reports

* ``valid_fwd``: share of groups of 4 along Eq. 1's reduction dim (Ci*kh*kw, or Ci with
  ``mask_layout=cin``) of the forward weight with at most 2 nonzeros (1.0 when correct);
* ``valid_bwd``: same for Eq. 2's weight along Co, when that GEMM is pruned;
* ``flip_rate``: share of forward-mask entries that changed since the previous measurement;
* ``mask_ms``: wall time to compute every layer's Eq. 1/Eq. 2 weights (masks included) once,
  outside autograd: the per-step mask overhead of the weights (X's fixed mask is not timed).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from fst.layers import sparse_layers
from fst.rules import operand_checks, weight_operands, with_state


class MaskTracker:
    """Keeps the previous forward masks to measure flip rates between calls."""

    def __init__(self):
        self.prev: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The previous masks (bool, CPU), so a resumed run's first flip rate is exact."""
        return {k: v.cpu() for k, v in self.prev.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.prev = {k: v.bool() for k, v in state.items()}

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        agg: dict[str, list[float]] = {"valid_fwd": [], "valid_bwd": [], "flip_rate": []}
        t0 = time.perf_counter()
        layers = list(sparse_layers(model))
        masks, operands = {}, {}
        for name, m in layers:  # what one forward computes: Eq. 1 and Eq. 2 weights
            operands[name] = weight_operands(m.weight, m.plan, state=m.rule_state)
        if layers and layers[0][1].weight.is_cuda:
            torch.cuda.synchronize()
        mask_ms = (time.perf_counter() - t0) * 1e3
        for name, m in layers:
            masks[name] = m.plan.rules[0].mask(
                m.weight.detach(), m.plan, **with_state(m.rule_state)
            )
        for name, m in layers:
            mask = masks[name]
            for check in operand_checks(m.plan, *operands[name], state=m.rule_state):
                key = "valid_fwd" if check.eq == 1 else "valid_bwd"
                v = check.valid_share()
                out[f"sparsity/{name}/{key}"] = v
                agg[key].append(v)
            if mask is not None:
                mask = mask.bool()
                prev = self.prev.get(name)
                if prev is not None and prev.shape == mask.shape:
                    flip = float((prev.to(mask.device) != mask).float().mean())
                    out[f"sparsity/{name}/flip_rate"] = flip
                    agg["flip_rate"].append(flip)
                self.prev[name] = mask.clone()
        for k, vals in agg.items():
            if vals:
                out[f"sparsity/{k}_mean"] = sum(vals) / len(vals)
        if layers:
            out["sparsity/mask_ms"] = mask_ms
        return out
