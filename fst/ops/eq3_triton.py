"""Eq. 3 of a token Linear layer for ``fst`` / ``fst_noir`` as one Triton GEMM.

The ``fixed`` rule's weight gradient of a Linear over tokens (:mod:`fst.ops.native`'s halved
Eq. 3) is, per grid row of the token layout (:mod:`fst.tokens`) and per even column ``c``::

    dW[O, I] = sum_{b, row, c even} (dY[b, t] + ir_coef * dY[b, t + 1])^T X[b, t],
    t = start + row * width + c,  dY[b, t + 1] only where c + 1 < width (same grid row)

``native`` materializes the IR-combined half of dY and the even-column half of X, then calls
cuBLAS. This kernel does the IR sum and the even-column gather while it loads its tiles, so
neither half is written to memory: one pass over the kept tokens, fp32 accumulation.

Segments (``start``, ``width``, ``rows``, ``coef``) describe the token axis, at most two:

- no layout: the whole axis is one row, ``(0, T, 1, ir_coef)``;
- a layout with ``prefix`` tokens and a ``rows x cols`` grid: the patches ``(prefix, cols,
  rows, ir_coef)`` and, when ``prefix > 0``, the prefix tokens either dense (``prefix_tokens=
  "dense"``: ``(0, 1, prefix, 0)``, a width-1 row per token, every token kept, no IR) or
  pruned as one more row (``"include"``: ``(0, prefix, 1, ir_coef)``).

An odd ``width`` keeps ``(width + 1) // 2`` columns; the last one has no right neighbour (no
IR term), exactly as :func:`fst.ops.eq3.ir_half` pads it.

Used by the ``sparse24`` backend for the weight gradient of token Linear layers on CUDA when
Triton imports (its ``fused_eq3=false`` turns it off; the unfused ``native`` path is the
fallback). Under ``torch.compile`` it is the opaque custom op ``fst::eq3_fixed``. Tests run it
on CPU under Triton's interpreter (``TRITON_INTERPRET=1``) against the ``reference`` backend.
On CUDA the tile sizes are autotuned per (out, in, kept tokens); when the output tiles alone
cannot fill the GPU the reduction is split (``split_k``) and the partial sums added in fp32.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of PyTorch
    triton = None

__all__ = ["available", "fixed_weight_grad", "segments_of", "eq3_fixed"]

Segment = tuple[int, int, int, float]  # (start token, row width, rows, IR coefficient)
# read once (torch.compile traces available()): set TRITON_INTERPRET before importing fst
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(t: torch.Tensor) -> bool:
    """Whether :func:`fixed_weight_grad` runs for ``t``: Triton imports and ``t`` is a CUDA
    tensor (any tensor under ``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    return t.is_cuda or _INTERPRET


def segments_of(num_tokens: int, coef: float, tokens=None, prefix_tokens: str = "dense"):
    """The (start, width, rows, coef) segments of a token axis of ``num_tokens`` (see above)."""
    if tokens is None:
        return [(0, num_tokens, 1, float(coef))]
    if tokens.num_tokens != num_tokens:
        raise ValueError(
            f"token layout {tokens.describe()} has {tokens.num_tokens} tokens, the input "
            f"{num_tokens}: set the layout for the size the model runs at"
        )
    rows, cols = tokens.grid
    segs = [(tokens.prefix, cols, rows, float(coef))]
    if tokens.prefix:
        if prefix_tokens == "include":
            segs.insert(0, (0, tokens.prefix, 1, float(coef)))
        else:
            segs.insert(0, (0, 1, tokens.prefix, 0.0))
    return segs


def kept(segments) -> int:
    """Kept tokens per example over ``segments`` (the reduction length over the batch)."""
    return sum(rows * ((width + 1) // 2) for _, width, rows, _ in segments)


if triton is not None:

    @triton.jit
    def _segment(
        acc, dy_ptr, x_ptr, O, I, NB,  # fp32 tile, operands, out / in / batch sizes
        s_dyb, s_dyt, s_dyc, s_xb, s_xt, s_xc,  # strides: batch, token, channel
        start, width, rows, coef,  # the segment
        offs_m, offs_n, pid_k,
        SPLIT_K: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        half = (width + 1) // 2
        per_b = rows * half
        total = NB * per_b
        # this program's share of the reduction, in whole BLOCK_K steps
        chunk = tl.cdiv(tl.cdiv(total, SPLIT_K), BLOCK_K) * BLOCK_K
        k_lo = pid_k * chunk
        k_hi = tl.minimum(total, k_lo + chunk)
        m_ok = offs_m < O
        n_ok = offs_n < I
        for k0 in range(k_lo, k_hi, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            live = k < k_hi
            b = (k // per_b).to(tl.int64)
            rem = k % per_b
            r = rem // half
            c = 2 * (rem % half)
            t = (start + r * width + c).to(tl.int64)
            right = live & (c + 1 < width) & (coef != 0.0)
            dy_row = dy_ptr + b * s_dyb + t * s_dyt  # [BLOCK_K]
            ld = live[:, None] & m_ok[None, :]
            d_ptrs = dy_row[:, None] + offs_m[None, :].to(tl.int64) * s_dyc  # [BLOCK_K, BLOCK_M]
            even = tl.load(d_ptrs, mask=ld, other=0.0).to(tl.float32)
            odd = tl.load(d_ptrs + s_dyt, mask=right[:, None] & m_ok[None, :], other=0.0)
            dyh = (even + coef * odd.to(tl.float32)).to(dy_ptr.dtype.element_ty)
            x_row = x_ptr + b * s_xb + t * s_xt
            x_ptrs = x_row[:, None] + offs_n[None, :].to(tl.int64) * s_xc  # [BLOCK_K, BLOCK_N]
            xt = tl.load(x_ptrs, mask=live[:, None] & n_ok[None, :], other=0.0)
            if UPCAST:  # Triton 3.8's interpreter multiplies bf16 tiles wrongly
                acc = tl.dot(tl.trans(dyh.to(tl.float32)), xt.to(tl.float32), acc)
            else:
                acc = tl.dot(tl.trans(dyh), xt, acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _eq3_kernel(
        dy_ptr, x_ptr, out_ptr, O, I, NB,
        s_dyb, s_dyt, s_dyc, s_xb, s_xt, s_xc,
        a_start, a_width, a_rows, a_coef, b_start, b_width, b_rows, b_coef,  # two segments
        KEPT,  # kept tokens per example (autotune key only)
        SPLIT_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # out is [SPLIT_K, O, I] fp32, contiguous; program (m, n, k) writes its partial tile
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        pid_k = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc = _segment(
            acc, dy_ptr, x_ptr, O, I, NB, s_dyb, s_dyt, s_dyc, s_xb, s_xt, s_xc,
            a_start, a_width, a_rows, a_coef, offs_m, offs_n, pid_k, SPLIT_K, BLOCK_K, PRECISION, UPCAST,
        )  # fmt: skip
        acc = _segment(
            acc, dy_ptr, x_ptr, O, I, NB, s_dyb, s_dyt, s_dyc, s_xb, s_xt, s_xc,
            b_start, b_width, b_rows, b_coef, offs_m, offs_n, pid_k, SPLIT_K, BLOCK_K, PRECISION, UPCAST,
        )  # fmt: skip
        o_ptrs = (
            out_ptr
            + pid_k.to(tl.int64) * O * I
            + offs_m[:, None].to(tl.int64) * I
            + offs_n[None, :]
        )
        tl.store(o_ptrs, acc, mask=(offs_m[:, None] < O) & (offs_n[None, :] < I))

    #: Tile configurations tried on CUDA (BLOCK_M over out, BLOCK_N over in, BLOCK_K tokens).
    CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in (
            (128, 128, 32, 4, 4),
            (128, 128, 64, 8, 3),
            (128, 256, 64, 8, 3),
            (256, 128, 64, 8, 3),
            (64, 128, 64, 4, 4),
            (64, 64, 64, 4, 4),
        )
    ]
    _eq3_tuned = triton.autotune(configs=CONFIGS, key=["O", "I", "KEPT", "SPLIT_K", "PRECISION"])(
        _eq3_kernel
    )

#: Autotune on CUDA (``FST_EQ3_AUTOTUNE=0``: always :data:`CUDA_TILES`, e.g. for quick tests).
AUTOTUNE = os.environ.get("FST_EQ3_AUTOTUNE", "1") != "0"
#: The tiles used on CUDA without autotuning.
CUDA_TILES = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 4, "num_stages": 4}
#: Tiles under the interpreter (CPU tests): one small configuration, no autotuning; the tiles
#: are multiplied in fp32 there (``UPCAST``: the interpreter's bf16 ``tl.dot`` is wrong in
#: Triton 3.8), after the IR sum is rounded to the input dtype as on the GPU.
INTERPRET_TILES = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


def _split_k(o: int, i: int, reduction: int, device: torch.device) -> int:
    """Reduction splits so that at least about one wave of 128x128 tiles runs (CUDA)."""
    if device.type != "cuda":
        return 1
    tiles = triton.cdiv(o, 128) * triton.cdiv(i, 128)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    split = 1
    while tiles * split * 2 <= sms and reduction // (split * 2) >= 1024:
        split *= 2
    return split


def _launch(dy3, x3, segments, split_k: int | None = None) -> torch.Tensor:
    nb, _, o = dy3.shape
    i = x3.shape[2]
    segs = list(segments) + [(0, 1, 0, 0.0)] * (2 - len(segments))
    if len(segs) != 2:
        raise ValueError(f"at most two token segments, got {segments}")
    kept_tokens = kept(segments)
    if split_k is None:
        split_k = _split_k(o, i, nb * kept_tokens, dy3.device)
    out = torch.empty(split_k, o, i, device=dy3.device, dtype=torch.float32)
    precision = None  # 16-bit tiles: Triton's default; fp32: as torch's matmul setting says
    if dy3.dtype == torch.float32 and dy3.is_cuda:
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    (sa, wa, ra, ca), (sb, wb, rb, cb) = segs
    args = (dy3, x3, out, o, i, nb, *dy3.stride(), *x3.stride())
    args += (sa, wa, ra, float(ca), sb, wb, rb, float(cb), kept_tokens)
    if dy3.is_cuda:

        def grid(meta):
            return (triton.cdiv(o, meta["BLOCK_M"]), triton.cdiv(i, meta["BLOCK_N"]), split_k)

        if AUTOTUNE:
            _eq3_tuned[grid](*args, SPLIT_K=split_k, PRECISION=precision, UPCAST=False)
        else:
            t = CUDA_TILES
            fixed = (triton.cdiv(o, t["BLOCK_M"]), triton.cdiv(i, t["BLOCK_N"]), split_k)
            _eq3_kernel[fixed](*args, SPLIT_K=split_k, PRECISION=precision, UPCAST=False, **t)
    else:
        t = INTERPRET_TILES
        grid = (triton.cdiv(o, t["BLOCK_M"]), triton.cdiv(i, t["BLOCK_N"]), split_k)
        _eq3_kernel[grid](*args, SPLIT_K=split_k, PRECISION=precision, UPCAST=True, **t)
    return out[0] if split_k == 1 else out.sum(0)


def fixed_weight_grad(
    dy: torch.Tensor,
    x: torch.Tensor,
    coef: float,
    tokens=None,
    prefix_tokens: str = "dense",
    split_k: int | None = None,
) -> torch.Tensor:
    """Eq. 3 of the ``fixed`` rule (fst, fst_noir) for a Linear: ``dW`` (out, in), float32.

    ``dy`` [..., T, out] and ``x`` [..., T, in] of one dtype (bf16, fp16 or fp32), tokens on
    dim -2 laid out as ``tokens`` (a :class:`fst.tokens.TokenLayout`, or None: one row). Equal
    to :func:`fst.ops.eq3.linear_weight_grad` for a ``fixed`` plan, computed in one kernel
    (see the module docstring). ``split_k``: reduction splits (default: chosen from the GPU's
    size; 1 on CPU).
    """
    if dy.dtype != x.dtype:
        raise ValueError(f"dY is {dy.dtype} and X is {x.dtype}: cast them to one dtype")
    if dy.dim() < 2 or dy.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"dY {tuple(dy.shape)} and X {tuple(x.shape)}: need [..., T, C] each")
    if tokens is not None:
        tokens.check(tuple(x.shape))
    t = dy.shape[-2]
    dy3 = dy.reshape(-1, t, dy.shape[-1])
    x3 = x.reshape(-1, t, x.shape[-1])
    segments = segments_of(t, coef, tokens, prefix_tokens)
    flat = [v for s in segments for v in s[:3]]
    return eq3_fixed(dy3, x3, flat, [s[3] for s in segments], split_k or 0)


@torch.library.custom_op("fst::eq3_fixed", mutates_args=())
def eq3_fixed(
    dy: torch.Tensor, x: torch.Tensor, segments: list[int], coefs: list[float], split_k: int
) -> torch.Tensor:
    """:func:`fixed_weight_grad` on ``dy`` [B, T, out], ``x`` [B, T, in] as one op (opaque to
    ``torch.compile``): ``segments`` the (start, width, rows) of each segment, flattened,
    ``coefs`` their IR coefficients, ``split_k`` 0 for the default. Returns (out, in) fp32."""
    segs = [(*segments[3 * j : 3 * j + 3], c) for j, c in enumerate(coefs)]
    return _launch(dy, x, segs, split_k or None)


@eq3_fixed.register_fake
def _(dy, x, segments, coefs, split_k):
    return dy.new_empty((dy.shape[-1], x.shape[-1]), dtype=torch.float32)
