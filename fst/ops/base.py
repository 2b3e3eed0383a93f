"""What every backend shares: the registry, conv geometry, weight operands, autocast casting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fst.masks import nm_mask_of_abs, transposable_mask
from fst.ops.released import regrouped_wt
from fst.registry import Registry
from fst.strategies import Strategy


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding and dilation of a groups=1 Conv2d, as (h, w) pairs."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, conv: torch.nn.Conv2d) -> ConvGeometry:
        pad = conv.padding
        if isinstance(pad, str):
            if pad != "valid":
                raise ValueError(f"padding={pad!r} is not supported by sparse convs")
            pad = (0, 0)
        return cls(tuple(conv.stride), tuple(pad), tuple(conv.dilation))


class Backend:
    """Executes the three GEMMs of a plan. Subclasses implement :meth:`conv2d` and :meth:`linear`.

    ``needs_cuda``: the backend only runs on CUDA devices (used by config validation).
    """

    name = "base"
    needs_cuda = False

    def conv2d(self, x, weight, bias, geom: ConvGeometry, plan: Strategy, decay: float):
        raise NotImplementedError

    def linear(self, x, weight, bias, plan: Strategy, decay: float):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


BACKENDS: Registry[Backend] = Registry("backend")


def forward_mask(weight: torch.Tensor, plan: Strategy, abs_w=None) -> torch.Tensor | None:
    """The Eq. 1 mask of ``weight`` ((Co, Ci, kh, kw) or (out, in)); None when dense.

    ``nm``: 2:4 along the flattened Ci*kh*kw (``im2col`` layout) or along Ci (``cin``);
    ``tsm``: transposable mask of the (Co, Ci*kh*kw) matrix.
    """
    if plan.forward == "dense":
        return None
    w2 = weight.detach().reshape(weight.shape[0], -1)
    if plan.forward == "tsm":
        return transposable_mask(w2).view(weight.shape)
    a = weight.detach().abs() if abs_w is None else abs_w
    if plan.mask_layout == "cin" and weight.dim() == 4:
        return nm_mask_of_abs(a, dim=1)
    return nm_mask_of_abs(a.reshape(w2.shape), dim=1).view(weight.shape)


def weight_operands(
    weight: torch.Tensor, plan: Strategy, need_bwd: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights of Eq. 1 and Eq. 2, both shaped like ``weight``, computed once per forward.

    Returns ``(w_fwd, w_bwd)``: ``w_fwd`` = W, S(W) or T(W); ``w_bwd`` = the matrix whose
    transpose multiplies dY in Eq. 2: W, the forward weight, or S(W^T) (2:4 along Co, the
    reduction dimension of Eq. 2, from the dense W or from S(W) per ``plan.wt_source``).
    ``w_bwd`` is None when ``need_bwd`` is False (no input gradient will be asked for).
    """
    w = weight.detach()
    shared_abs = plan.forward == "nm" and plan.input_grad == "nm_wt" and plan.wt_source == "dense"
    a = w.abs() if shared_abs else None
    mask = forward_mask(w, plan, a)
    w_fwd = w if mask is None else w * mask
    if not need_bwd:
        return w_fwd, None
    if plan.input_grad in ("dense", "nm_dy"):
        return w_fwd, w
    if plan.input_grad == "fwd":
        return w_fwd, w_fwd
    if plan.wt_source == "pruned":  # the release: S(W) pruned again inside one filter
        return w_fwd, regrouped_wt(w_fwd)
    a = w.abs() if a is None else a  # S(W^T): groups along Co, from the dense W
    wt_mask = nm_mask_of_abs(a.reshape(w.shape[0], -1), dim=0).view(w.shape)
    return w_fwd, w * wt_mask


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype in force for ``x``'s device, or None."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def cast(dtype: torch.dtype | None, *tensors):
    """Cast floating tensors to ``dtype`` (no-op for None); None entries pass through."""
    if dtype is None:
        return tensors
    return tuple(t if t is None else t.to(dtype) for t in tensors)


def add_decay(grad_w: torch.Tensor, weight: torch.Tensor, w_fwd: torch.Tensor, plan, decay):
    """SR-STE (Eq. 6): ``grad += decay * (W - S(W))`` with the forward-pruned weight."""
    if decay and plan.uses_decay:
        grad_w = grad_w.add_(weight.detach() - w_fwd, alpha=decay)
    return grad_w
