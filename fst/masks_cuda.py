"""The 2:4 mask of :func:`fst.masks.nm_mask_of_abs` as one Triton kernel on CUDA tensors.

The eager formulation (:func:`fst.masks._keep_2of4`) is sixteen element-wise PyTorch ops; on a
GPU each is a kernel launch that costs a few microseconds of GPU time even on a 64x64 weight,
which for fst's two masks per layer (S(W), S(W^T)) of a ResNet-50 added up to about 5 ms per
training step (``results/gpu/``). This kernel computes the same keep-set (the same
comparisons: entry i beats entry j iff ``|t_i| >= |t_j|`` for i < j, so the lower index wins
ties; a trailing partial group counts as zero-padded) in one pass: each program reads groups
of four along the grouped dimension and writes their mask.

Used by :func:`fst.masks.nm_mask_of_abs` for 2:4 on CUDA tensors when Triton imports
(``FST_TRITON_MASKS=0`` turns it off); tests run it on CPU under Triton's interpreter
(``TRITON_INTERPRET=1``) against the eager formulation.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of PyTorch
    triton = None

__all__ = ["available", "nm24_mask"]

BLOCK = 1024


def available(t: torch.Tensor) -> bool:
    """Whether :func:`nm24_mask` serves ``t``: a CUDA tensor (any tensor under the
    interpreter), Triton importable, not switched off by ``FST_TRITON_MASKS=0``."""
    if triton is None or os.environ.get("FST_TRITON_MASKS", "1") == "0":
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _nm24_kernel(a_ptr, out_ptr, n_groups, length, post, BLOCK: tl.constexpr):
        # a is [pre, length, post] contiguous; group g = (p, gi, q) covers
        # a[p, 4*gi : 4*gi + 4, q]; n_groups = pre * ceil(length / 4) * post.
        pid = tl.program_id(0)
        g = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        live = g < n_groups
        ngrp = (length + 3) // 4
        q = g % post
        r = g // post
        gi = r % ngrp
        p = r // ngrp
        base = p * length * post + q
        i0 = gi * 4
        m0 = live & (i0 < length)
        m1 = live & (i0 + 1 < length)
        m2 = live & (i0 + 2 < length)
        m3 = live & (i0 + 3 < length)
        x0 = tl.load(a_ptr + base + i0 * post, mask=m0, other=0.0)
        x1 = tl.load(a_ptr + base + (i0 + 1) * post, mask=m1, other=0.0)
        x2 = tl.load(a_ptr + base + (i0 + 2) * post, mask=m2, other=0.0)
        x3 = tl.load(a_ptr + base + (i0 + 3) * post, mask=m3, other=0.0)
        w01 = (x0 >= x1).to(tl.int32)
        w02 = (x0 >= x2).to(tl.int32)
        w03 = (x0 >= x3).to(tl.int32)
        w12 = (x1 >= x2).to(tl.int32)
        w13 = (x1 >= x3).to(tl.int32)
        w23 = (x2 >= x3).to(tl.int32)
        k0 = (w01 + w02 + w03) >= 2
        k1 = (w12 + w13) > w01
        k2 = (w02 + w12) <= w23
        k3 = (w03 + w13 + w23) <= 1
        tl.store(out_ptr + base + i0 * post, k0.to(tl.int8), mask=m0)
        tl.store(out_ptr + base + (i0 + 1) * post, k1.to(tl.int8), mask=m1)
        tl.store(out_ptr + base + (i0 + 2) * post, k2.to(tl.int8), mask=m2)
        tl.store(out_ptr + base + (i0 + 3) * post, k3.to(tl.int8), mask=m3)


def nm24_mask(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool 2:4 keep-mask of the magnitudes ``a`` along ``dim`` (see the module docstring)."""
    dim = dim % a.dim()
    shape = a.shape
    length = shape[dim]
    pre, post = math.prod(shape[:dim]), math.prod(shape[dim + 1 :])
    x = a.contiguous()
    out = torch.empty(shape, dtype=torch.uint8, device=a.device)
    n_groups = pre * (-(-length // 4)) * post
    if n_groups:
        grid = (triton.cdiv(n_groups, BLOCK),)
        _nm24_kernel[grid](x, out, n_groups, length, post, BLOCK=BLOCK)
    return out.view(torch.bool)
