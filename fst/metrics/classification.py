"""Classification accuracy: top-1 / top-5 (%) and the mean cross-entropy of the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fst.metrics.base import METRICS, Metric


@METRICS.register("accuracy")
class Accuracy(Metric):
    """``update(logits [B, C], labels [B])``; ``compute()`` -> ``{"top1", "top5"}`` in percent
    and ``"loss"``, the mean cross-entropy without label smoothing (top-5 is top-C for C < 5)."""

    def reset(self) -> None:
        self.n, self.loss_sum, self.c1, self.c5 = 0, 0.0, 0, 0

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        logits = preds.float()
        self.loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == targets[:, None]
        self.c1 += hit[:, 0].sum().item()
        self.c5 += hit.any(dim=1).sum().item()
        self.n += targets.numel()

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("the validation loader is empty")
        n = self.n
        return {"top1": 100.0 * self.c1 / n, "top5": 100.0 * self.c5 / n, "loss": self.loss_sum / n}
