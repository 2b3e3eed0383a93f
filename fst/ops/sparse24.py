"""``sparse24`` backend: Eq. 1 and Eq. 2 on NVIDIA 2:4 sparse tensor cores (cuSPARSELt), bf16.

Each layer's three GEMMs (notation of :mod:`fst.strategies`):

- Eq. 1 ``Y = W' X`` and Eq. 2 ``dX = W''^T dY``: the pruned weight is compressed once per
  forward (Eq. 1: ``S(W)``/``T(W)`` as (Co, K), 2:4 along K; Eq. 2: the Eq. 2 weight
  transposed, (K, Co), 2:4 along Co) and multiplied by :mod:`fst.ops.cslt`. ``fst``'s S(W)
  and S(W^T) (from the dense W) are two separately compressed operands; ``tsm``'s T(W) is 2:4
  both ways and is compressed in both orientations (never re-pruned by a tile kernel).
- Eq. 3 is ``native``'s (:mod:`fst.ops.eq3`: the halved weight gradient for
  ``fst``/``fst_noir``), except for Linear layers over tokens with ``fst``/``fst_noir`` on
  CUDA: there it is one Triton GEMM that does the IR sum and the even-column gather while
  loading its tiles (:mod:`fst.ops.eq3_triton`; ``fused_eq3=false``: the ``native`` path).

Kernels per GEMM (``KERNELS``); which ones may run is decided from the operand's 2:4 grouping
(exactness), which one does from a one-time timing per layer shape (``choices``):

- ``dense``: what ``native`` runs (cuDNN / cuBLAS with the masked operand). Exact for every
  plan; the only kernel for a dense operand (``srste``'s Eq. 2 W^T, ``gg``/``gx``'s Eq. 2,
  whose sparse operand is dY, the release's R(S(W)), which is not 2:4 along Co).
- ``gemm``: Linear layers ([T, in] tokens as rows), and 1x1 convolutions (padding 0, any
  stride) as one GEMM over the N*Ho*Wo rows of the channels-last activation (free with
  ``channels_last``; an NCHW input is copied).
- ``im2col``: k x k convolutions whose Eq. 1 operand is 2:4 along the flattened Ci*kh*kw
  (``mask_layout="im2col"``, ``tsm``): patches gathered from NHWC into (N*Ho*Wo, Ci*kh*kw),
  one GEMM. Eq. 2 (any mask layout): one GEMM to the (N*Ho*Wo, Ci*kh*kw) columns, then
  col2im (``F.fold``, fp32 accumulation).
- ``taps``: stride-1 k x k convolutions, Eq. 1 with ``mask_layout="cin"`` (2:4 along Ci at
  each kernel position): one GEMM against the kh*kw kernel positions stacked as (kh*kw*Co, Ci)
  over the padded NHWC input, then a shift-and-add of the kh*kw partial outputs (fp32). Eq. 2
  likewise with (kh*kw*Ci, Co), 2:4 along Co.

Before a layer's first use with a new input shape, the chosen sparse kernels are checked
against the ``dense`` ones on the real input (and a random dY) within ``tol`` (relative to
the largest output; bf16 rounds at 2^-9); on a mismatch or an error the layer
falls back to ``native`` for good, with a warning. ``fst.summary`` shows, per layer, the
kernel of each GEMM, why, and the check (``describe_layer``).

It refuses (:class:`~fst.ops.cslt.SparseGemmError`, naming ``backend=native``) what it cannot
run exactly: inputs not on a CUDA GPU with sparse tensor cores (compute capability >= 8.0)
and cuSPARSELt, and compute dtypes other than bf16/fp16 (cuSPARSELt's float32 is 1:2, not
2:4): train with ``trainer.precision=bf16`` (autocast). Every other plan runs exactly: a GEMM
that cannot use sparse tensor cores runs as ``native`` runs it.

Settings (:class:`Sparse24Backend`'s keyword arguments, defaults in its signature, and the
keys of ``configs/backend/sparse24.yaml``: ``backend.kernels=sparse``): ``kernels`` = ``auto``
(time and pick) | ``sparse`` (first sparse kernel that may run, no timing) | ``dense``
(everything as ``native``), attribute ``mode``; ``verify`` and ``tol`` (the check above);
``alg_search`` (search cuSPARSELt's fastest algorithm once per problem: on an H100 its default
algorithm was 0.81x of cuBLAS over ResNet-50's Eq. 1 GEMMs, the searched ones 1.08x,
``results/gpu/``); ``fused_eq3`` (the fused Triton Eq. 3 above, where Triton imports);
``timing`` = ``eager`` (a kernel's time includes its host work, what eager training pays) |
``graph`` (GPU time only, for steps replayed as CUDA graphs, :mod:`fst.ops.gputime`);
``pack_cache`` (below). An environment variable of :data:`ENV` (``FST_SPARSE24_<SETTING>``),
when set, overrides its setting whatever the config says (read when the backend is created).

Each weight operand is compressed once per optimizer step (the pack cache of
:class:`~fst.ops.cslt.SparseGemm`, keyed on the parameter's version counter; Eq. 1 and
Eq. 2 of a layer are two operands) and each product runs from a cached cuSPARSELt plan
(:class:`~fst.ops.cslt.CusparseltGemm`'s driver); see :mod:`fst.ops.cslt`.

Under ``torch.compile`` each cuSPARSELt GEMM is one call of the custom op ``fst::sparse24_mm``
(:meth:`~fst.ops.cslt.SparseGemm.matmul`: compress + multiply at run time, so the compressed
operand, which has no fake kernel, never enters a graph) and a layer whose route for this
input is known traces whole (dict lookups). A new input key is decided by ``_decide`` outside
any graph (``torch.compiler.disable``: it times kernels on the real tensors); under plain
``torch.compile`` that is a graph break per layer on that call, which
:func:`fst.compile.compile_model` avoids by running each new input signature's first call
eagerly (see :mod:`fst.compile`).

On CPU (tests, debugging) ``with backend.emulate():`` runs all of the above with
:class:`~fst.ops.cslt.EmulatedGemm`, which checks the 2:4 pattern, layout and alignment that
cuSPARSELt silently assumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fst.ops import eq3, eq3_triton  # noqa: F401  (eq3_triton: the tests patch it here)
from fst.ops.base import BACKENDS, ConvGeometry, autocast_dtype, cast, settings_of
from fst.ops.cslt import CusparseltGemm, EmulatedGemm, SparseGemm, SparseGemmError
from fst.ops.function import Kernels, LayerFunction
from fst.ops.gputime import graph_ms, time_ms
from fst.ops.native import NativeBackend
from fst.rules import weight_operands
from fst.strategies import Strategy

log = logging.getLogger(__name__)

__all__ = ["ENV", "KERNELS", "Sparse24Backend", "SparseGemmError", "eligible_kernels"]

#: The environment variable that overrides each setting (the only ones fst reads for it).
ENV = {
    "kernels": "FST_SPARSE24_KERNELS",
    "verify": "FST_SPARSE24_VERIFY",
    "tol": "FST_SPARSE24_TOL",
    "alg_search": "FST_SPARSE24_ALG_SEARCH",
    "fused_eq3": "FST_SPARSE24_FUSED_EQ3",
    "timing": "FST_SPARSE24_TIMING",
    "pack_cache": "FST_SPARSE24_PACK_CACHE",
}
CHOICES = {"kernels": ("auto", "sparse", "dense"), "timing": ("eager", "graph")}

KERNELS = {
    "dense": "masked dense kernel, as backend=native",
    "gemm": "one cuSPARSELt GEMM over all rows (Linear / 1x1 conv, channels-last)",
    "im2col": "NHWC patch gather + one cuSPARSELt GEMM (Eq. 2: GEMM + col2im)",
    "taps": "one cuSPARSELt GEMM over the kh*kw kernel positions + shift-and-add (stride 1)",
}
SPARSE_PREFERENCE = ("gemm", "taps", "im2col")  # kernels=sparse takes the first


# --------------------------------------------------------------------------------------------
# which kernels may run each GEMM exactly
# --------------------------------------------------------------------------------------------


def eq1_grouping(plan: Strategy, weight_shape) -> tuple[set[str], str]:
    """Along what the Eq. 1 operand is 2:4: a subset of {"K", "Ci"}, and the operand's name.

    ``K``: the GEMM's flattened Ci*kh*kw (im2col order; ``in`` for Linear); ``Ci``: input
    channels at each kernel position. Both for 1x1 kernels and Linear; empty if the Eq. 1 rule
    does not give a 2:4 operand.
    """
    rule = plan.rules[0]
    w = rule.formula(plan).removesuffix(" X")
    if not (rule.prunes and rule.tensor_core(plan)):
        return set(), w
    one_by_one = len(weight_shape) == 2 or tuple(weight_shape[2:]) == (1, 1)
    if one_by_one:
        return {"K", "Ci"}, w
    if getattr(rule, "mask_layout", "") == "cin":  # an option of the Eq. 1 rule
        return {"Ci"}, w
    return {"K"}, w


def eq2_sparse(plan: Strategy) -> tuple[bool, str]:
    """Whether the Eq. 2 weight is 2:4 along Co (its GEMM's reduction dim), and why not."""
    rule = plan.rules[1]
    name = rule.formula(plan).removesuffix(" dY")
    if rule.prunes_weight and rule.tensor_core(plan):
        return True, f"{name}, 2:4 along Co"
    if not rule.prunes:
        return False, "W^T is dense"
    if rule.prunes_dy:
        return False, "the pruned operand is dY (activation), not the weight"
    return False, f"{name} is not 2:4 along Co"


def eligible_kernels(kind: str, weight_shape, geom: ConvGeometry | None, plan: Strategy):
    """``(eq1_kernels, eq1_note, eq2_kernels, eq2_note)``: kernels that run each GEMM exactly.

    Lists start with ``dense`` (always exact); notes say why a sparse kernel is missing.
    """
    groups, w = eq1_grouping(plan, weight_shape)
    sparse2, why2 = eq2_sparse(plan)
    if kind == "linear":
        k1 = ["dense"] + (["gemm"] if "K" in groups else [])
        k2 = ["dense"] + (["gemm"] if sparse2 else [])
        return k1, ("" if groups else f"{w} is dense"), k2, ("" if sparse2 else why2)
    one_by_one = tuple(weight_shape[2:]) == (1, 1)
    stride1 = tuple(geom.stride) == (1, 1)
    if one_by_one and tuple(geom.padding) == (0, 0):
        shaped = ["gemm"]
    else:
        shaped = ["im2col"] + (["taps"] if stride1 else [])
    k1, note1 = ["dense"], ""
    if not groups:
        note1 = f"{w} is dense"
    else:
        for k in shaped:
            if k == "gemm" or (k == "im2col" and "K" in groups) or (k == "taps" and "Ci" in groups):
                k1.append(k)
        if len(k1) == 1:
            note1 = f"{w} is 2:4 along Ci per kernel position; taps needs stride 1"
    k2 = ["dense"] + (shaped if sparse2 else [])
    return k1, note1, k2, ("" if sparse2 else why2)


# --------------------------------------------------------------------------------------------
# the kernels: Eq. 1 (x, w -> y) and Eq. 2 (dy, w -> dx) of a conv; NCHW logical shapes
# --------------------------------------------------------------------------------------------


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the shift-and-add / col2im passes (fp32; fp64 for fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> contiguous (N, H, W, C) (free for a channels-last tensor)."""
    return t.permute(0, 2, 3, 1).contiguous()


def conv_eq1_dense(gemm, x, w, b, g):
    return F.conv2d(x, w, b, g.stride, g.padding, g.dilation)


def conv_eq1_gemm(gemm: SparseGemm, x, w, b, g):
    """1x1 conv, padding 0: ``Y[n*h*w, Co] = X[n*h*w, Ci] S(W)^T``, S(W) (Co, Ci) 2:4 along Ci."""
    sh, sw = g.stride
    xs = x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]
    n, ci, ho, wo = xs.shape
    rows = _nhwc(xs).view(n * ho * wo, ci)
    y = gemm.matmul(w.reshape(w.shape[0], ci), rows.t(), b, transpose_result=True)  # (nhw, Co)
    return y.view(n, ho, wo, -1).permute(0, 3, 1, 2)


def _patches(x, k, g: ConvGeometry):
    """(N*Ho*Wo, Ci*kh*kw) im2col rows of ``x`` in PyTorch's (Ci, kh, kw) order, from NHWC."""
    n, ci, h, w = x.shape
    ho, wo = g.out_hw(h, w, k)
    ph, pw = g.padding
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph)).contiguous()  # (N, Hp, Wp, Ci)
    s_n, s_h, s_w, s_c = xp.stride()
    view = xp.as_strided(
        (n, ho, wo, ci, k[0], k[1]),
        (s_n, s_h * g.stride[0], s_w * g.stride[1], s_c, s_h * g.dilation[0], s_w * g.dilation[1]),
    )
    return view.reshape(n * ho * wo, ci * k[0] * k[1]), (n, ho, wo)


def conv_eq1_im2col(gemm: SparseGemm, x, w, b, g):
    """``Y = cols S(W)^T`` with S(W) (Co, Ci*kh*kw) 2:4 along the im2col K."""
    cols, (n, ho, wo) = _patches(x, w.shape[2:], g)
    y = gemm.matmul(w.reshape(w.shape[0], -1), cols.t(), b, transpose_result=True)
    return y.view(n, ho, wo, -1).permute(0, 3, 1, 2)


def conv_eq1_taps(gemm: SparseGemm, x, w, b, g):
    """Stride 1: ``P = Xpad [S(W) at each (i, j)]^T`` then ``Y(h, w) = sum_ij P_ij(h+i, w+j)``."""
    co, ci, kh, kw = w.shape
    n, _, h, wd = x.shape
    ho, wo = g.out_hw(h, wd, (kh, kw))
    ph, pw = g.padding
    dh, dw = g.dilation
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph)).contiguous()  # (N, Hp, Wp, Ci)
    hp, wp = xp.shape[1:3]
    a = w.permute(2, 3, 0, 1).reshape(kh * kw * co, ci)  # rows (i, j, co), 2:4 along Ci
    p = gemm.matmul(a, xp.view(-1, ci).t(), transpose_result=True)
    p = p.view(n, hp, wp, kh, kw, co)
    y = torch.zeros(n, ho, wo, co, dtype=_acc(x.dtype), device=x.device)
    for i in range(kh):
        for j in range(kw):
            y += p[:, i * dh : i * dh + ho, j * dw : j * dw + wo, i, j]
    if b is not None:
        y += b
    return y.to(x.dtype).permute(0, 3, 1, 2)


def conv_eq2_dense(gemm, dy, x_shape, wb, g, plan):
    dyi = plan.rules[1].prune_dy(dy, 1, plan)
    # only its shape and layout are read: NCHW beside a channels-last dY costs cuDNN a transpose
    cl = (
        dy.dim() == 4
        and not dy.is_contiguous()
        and dy.is_contiguous(memory_format=torch.channels_last)
    )
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.empty(x_shape, dtype=dy.dtype, device=dy.device, memory_format=fmt)
    args = (g.stride, g.padding, g.dilation, False, [0, 0], 1)
    return eq3.conv_bwd(dyi, x, wb, None, *args, [True, False, False])[0]


def conv_eq2_gemm(gemm: SparseGemm, dy, x_shape, wb, g, plan):
    """1x1, padding 0: ``dX[n*ho*wo, Ci] = dY[n*ho*wo, Co] S(W^T)`` (A = S(W^T)^T, 2:4 on Co)."""
    n, ci, h, w = x_shape
    _, co, ho, wo = dy.shape
    a = wb.reshape(co, ci).t().contiguous()
    d = gemm.matmul(a, _nhwc(dy).view(-1, co).t(), transpose_result=True).view(n, ho, wo, ci)
    if (ho, wo) != (h, w):  # stride > 1: the other input positions get no gradient
        full = torch.zeros(n, h, w, ci, dtype=d.dtype, device=d.device)
        full[:, :: g.stride[0], :: g.stride[1]] = d
        d = full
    return d.permute(0, 3, 1, 2)


def conv_eq2_im2col(gemm: SparseGemm, dy, x_shape, wb, g, plan):
    """``dcols[n*ho*wo, K] = dY W''`` (A = W''^T (K, Co), 2:4 along Co), then col2im."""
    n, ci, h, w = x_shape
    _, co, ho, wo = dy.shape
    k = wb.shape[2:]
    a = wb.reshape(co, -1).t().contiguous()
    cols = gemm.matmul(a, _nhwc(dy).view(-1, co).t(), transpose_result=True)
    cols = cols.view(n, ho * wo, -1).transpose(1, 2).to(_acc(dy.dtype))  # (N, K, L)
    dx = F.fold(cols, (h, w), k, g.dilation, g.padding, g.stride)
    return dx.to(dy.dtype)


def conv_eq2_taps(gemm: SparseGemm, dy, x_shape, wb, g, plan):
    """Stride 1: ``Q = dY [W'' at each (i, j)]`` then ``dXpad(h+i, w+j) += Q_ij(h, w)``."""
    n, ci, h, w = x_shape
    co, _, kh, kw = wb.shape
    _, _, ho, wo = dy.shape
    ph, pw = g.padding
    dh, dw = g.dilation
    a = wb.permute(2, 3, 1, 0).reshape(kh * kw * ci, co)  # rows (i, j, ci), 2:4 along Co
    q = gemm.matmul(a, _nhwc(dy).view(-1, co).t(), transpose_result=True)
    q = q.view(n, ho, wo, kh, kw, ci)
    dxp = torch.zeros(n, h + 2 * ph, w + 2 * pw, ci, dtype=_acc(dy.dtype), device=dy.device)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i * dh : i * dh + ho, j * dw : j * dw + wo] += q[:, :, :, i, j]
    return dxp[:, ph : ph + h, pw : pw + w].to(dy.dtype).permute(0, 3, 1, 2)


CONV_EQ1 = {
    "dense": conv_eq1_dense,
    "gemm": conv_eq1_gemm,
    "im2col": conv_eq1_im2col,
    "taps": conv_eq1_taps,
}
CONV_EQ2 = {
    "dense": conv_eq2_dense,
    "gemm": conv_eq2_gemm,
    "im2col": conv_eq2_im2col,
    "taps": conv_eq2_taps,
}


def linear_eq1_dense(gemm, x, w, b):
    return F.linear(x, w, b)


def linear_eq1_gemm(gemm: SparseGemm, x, w, b):
    """``Y[T, out] = X[T, in] S(W)^T``: A = S(W) (out, in), 2:4 along in."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    y = gemm.matmul(w.contiguous(), rows.t(), b, transpose_result=True)
    return y.view(*x.shape[:-1], w.shape[0])


def linear_eq2_dense(gemm, dy, wb, plan):
    return plan.rules[1].prune_dy(dy, -1, plan) @ wb


def linear_eq2_gemm(gemm: SparseGemm, dy, wb, plan):
    """``dX[T, in] = dY[T, out] S(W^T)``: A = S(W^T)^T (in, out), 2:4 along out."""
    rows = dy.reshape(-1, dy.shape[-1]).contiguous()
    dx = gemm.matmul(wb.t().contiguous(), rows.t(), transpose_result=True)
    return dx.view(*dy.shape[:-1], wb.shape[1])


LINEAR_EQ1 = {"dense": linear_eq1_dense, "gemm": linear_eq1_gemm}
LINEAR_EQ2 = {"dense": linear_eq2_dense, "gemm": linear_eq2_gemm}


# --------------------------------------------------------------------------------------------
# a layer's route and its kernels for fst.ops.function.LayerFunction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """The kernels of one layer for one input shape: Eq. 1, Eq. 2 (``none``: not needed)."""

    eq1: str
    eq2: str

    @property
    def is_dense(self) -> bool:
        return self.eq1 == "dense" and self.eq2 in ("dense", "none")


DENSE_ROUTE = Route("dense", "dense")  # a constant: torch.compile traces no dataclass creation


def _conv_eq1(xc, wf, b, weight, args):
    g, route, gemm = args
    return CONV_EQ1[route.eq1](gemm.owned(weight, f"eq1:{route.eq1}"), xc, wf, b, g), xc


def _conv_grads(dy, xc, wb, weight, plan, kw, args, x_shape, need):
    g, route, gemm = args
    dx = dw = None
    if need[0]:
        gemm = gemm.owned(weight, f"eq2:{route.eq2}")
        dx = CONV_EQ2[route.eq2](gemm, dy, x_shape, wb, g, plan)
    if need[1]:  # Eq. 3 exactly as native (halved for fst / fst_noir)
        dw = eq3.conv_weight_grad(dy, xc, wb, g, plan, kw)
    return dx, dw, None


def _linear_eq1(xc, wf, b, weight, args):
    route, gemm, _, _ = args
    return LINEAR_EQ1[route.eq1](gemm.owned(weight, f"eq1:{route.eq1}"), xc, wf, b), xc


def _linear_grads(dy, xc, wb, weight, plan, kw, args, x_shape, need):
    route, gemm, tokens, fuse = args  # tokens: a ViT layer's layout, Eq. 3 follows its rows
    dx = dw = None
    if need[0]:
        dx = LINEAR_EQ2[route.eq2](gemm.owned(weight, f"eq2:{route.eq2}"), dy, wb, plan)
    if need[1]:
        dw = eq3.fused_linear_weight_grad(dy, xc, plan, tokens) if fuse else None
        if dw is None:
            dw = eq3.linear_weight_grad(dy, xc, plan, kw, tokens)
    return dx, dw, None


CONV = Kernels(_conv_eq1, _conv_grads)
LINEAR = Kernels(_linear_eq1, _linear_grads)


# --------------------------------------------------------------------------------------------
# the backend: choice per shape, check per layer, fallback, description
# --------------------------------------------------------------------------------------------


@dataclass
class Choice:
    """What the one-time timing of one layer shape found (ms per kernel, errors)."""

    route: Route
    eq1_ms: dict[str, float] = field(default_factory=dict)
    eq2_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    how: str = "timed"


@dataclass
class LayerRecord:
    """Per layer: the route of the last input shape, the checks run, a fallback if any."""

    kind: str
    notes: tuple[str, str] = ("", "")  # why Eq. 1 / Eq. 2 cannot use a sparse kernel
    routes: dict[tuple, Route] = field(default_factory=dict)
    checks: dict[tuple, str] = field(default_factory=dict)
    last_key: tuple | None = None
    fallback: str | None = None


class _PerTensor:
    """A dict keyed by tensor identity whose entries go when the tensor does.

    (``weakref.WeakKeyDictionary`` compares colliding keys with ``==``, which tensors answer
    elementwise.)
    """

    def __init__(self):
        self._d: dict[int, LayerRecord] = {}

    def get(self, t: torch.Tensor, default=None):
        return self._d.get(id(t), default)

    def __getitem__(self, t: torch.Tensor) -> LayerRecord:
        return self._d[id(t)]

    def __setitem__(self, t: torch.Tensor, rec: LayerRecord) -> None:
        if id(t) not in self._d:
            weakref.finalize(t, self._d.pop, id(t), None)
        self._d[id(t)] = rec

    def values(self):
        return self._d.values()

    def __len__(self) -> int:
        return len(self._d)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


class Sparse24Backend(NativeBackend):
    """Eq. 1 and 2 on sparse tensor cores where exact and faster, else as its base class
    ``native``; see the module docstring (settings: its table; ``gemm``: default cuSPARSELt)."""

    name = "sparse24"
    needs_cuda = True
    decides_per_input = True

    def __init__(
        self,
        gemm: SparseGemm | None = None,
        *,
        kernels: str = "auto",
        verify: bool = True,
        tol: float = 0.02,
        alg_search: bool = True,
        fused_eq3: bool = True,
        timing: str = "eager",
        pack_cache: bool = True,
    ):
        s = {k: v for k, v in locals().items() if k in ENV}
        defaults = settings_of(type(self))
        for key, var in ENV.items():  # the environment overrides, parsed like the default
            raw = os.environ.get(var, "").strip().lower()
            if raw:
                s[key] = raw not in ("0", "false", "no") if type(defaults[key]) is bool else raw
        for key, valid in CHOICES.items():
            if s[key] not in valid:
                raise ValueError(
                    f"sparse24 {key}={s[key]!r} (setting or {ENV[key]}); valid: {', '.join(valid)}"
                )
        self.mode, self.timing, self.tol = s["kernels"], s["timing"], float(s["tol"])
        self.verify, self.fused_eq3, self.pack_cache = s["verify"], s["fused_eq3"], s["pack_cache"]
        self.gemm = self._packing(gemm or CusparseltGemm(search_alg=bool(s["alg_search"])))
        self.timer: Callable[[Callable[[], object], torch.device, str], float] = self._time_kernel
        self.choices: dict[tuple, Choice] = {}
        self.layers = _PerTensor()

    # ---- public entry points (fst.ops.base.Backend) ---------------------------------------

    def conv2d(self, x, weight, bias, geom, plan, decay, state=None):
        if plan.is_dense or state is not None:  # masks held by a sparsifier: as native
            return super().conv2d(x, weight, bias, geom, plan, decay, state)
        route = self._route("conv", x, weight, bias, geom, plan)
        if route is None:
            return super().conv2d(x, weight, bias, geom, plan, decay)
        args = (geom, route, self.gemm)
        return LayerFunction.apply(CONV, x, weight, bias, plan, decay, None, args)

    def linear(self, x, weight, bias, plan, decay, state=None, tokens=None):
        if plan.is_dense or state is not None:  # masks held by a sparsifier: as native
            return super().linear(x, weight, bias, plan, decay, state, tokens)
        route = self._route("linear", x, weight, bias, None, plan)
        fuse = self.fused_eq3 and eq3.fuses(plan, x)
        if route is None and fuse:  # Eq. 1 and 2 dense (as native), Eq. 3 fused
            route = DENSE_ROUTE
        if route is None:
            return super().linear(x, weight, bias, plan, decay, state, tokens)
        args = (route, self.gemm, tokens, fuse)
        return LayerFunction.apply(LINEAR, x, weight, bias, plan, decay, None, args)

    def describe_layer(self, m) -> str:
        """One line for ``fst.summary``: the kernel of Eq. 1 and 2, why, and the check."""
        if getattr(m, "rule_state", None) is not None:
            return "sparse24: runs as native (its masks are held by the strategy's sparsifier)"
        rec = self.layers.get(m.weight)
        if rec is None:
            return "sparse24: not run yet (kernels are timed and checked at the first forward)"
        if rec.fallback:
            return f"sparse24: runs as native ({rec.fallback})"
        route = rec.routes.get(rec.last_key)
        if route is None:
            return "sparse24: not run yet"
        parts = []
        for eq, kernel, note in (
            ("eq1", route.eq1, rec.notes[0]),
            ("eq2", route.eq2, rec.notes[1]),
        ):
            if kernel == "dense" and note:
                parts.append(f"{eq} dense ({note})")
            elif kernel == "dense":
                parts.append(f"{eq} dense (faster)" if self.mode == "auto" else f"{eq} dense")
            elif kernel != "none":
                parts.append(f"{eq} {kernel} (cuSPARSELt)")
        check = rec.checks.get(rec.last_key, "")
        return "sparse24: " + ", ".join(parts) + (f"; {check}" if check else "")

    @contextlib.contextmanager
    def emulate(self, gemm: SparseGemm | None = None, timer=None):
        """Run on any device with ``gemm`` (default :class:`EmulatedGemm`); restores on exit."""
        saved = (self.gemm, self.timer, self.choices, self.layers)
        self.gemm = self._packing(gemm or EmulatedGemm())
        if timer is not None:
            self.timer = timer
        self.choices, self.layers = {}, _PerTensor()
        try:
            yield self
        finally:
            self.gemm, self.timer, self.choices, self.layers = saved

    def reset(self) -> None:
        """Forget every choice, check and fallback (they are redone at the next forward)."""
        self.choices.clear()
        self.layers = _PerTensor()

    def choices_table(self) -> str:
        """The per-shape choices as Markdown (kernel ms of Eq. 1 and Eq. 2)."""
        lines = ["| layer shape | input | eq1 | eq1 ms | eq2 | eq2 ms | how |", "|---" * 7 + "|"]
        for key, c in self.choices.items():
            kind, xs, ws, geom = key[:4]
            g = "" if geom is None else f" s{geom.stride[0]} p{geom.padding[0]}"
            ms1 = " ".join(f"{k}={v:.3f}" for k, v in c.eq1_ms.items())
            ms2 = " ".join(f"{k}={v:.3f}" for k, v in c.eq2_ms.items())
            lines.append(
                f"| {kind} {'x'.join(map(str, ws))}{g} | {'x'.join(map(str, xs))} | "
                f"{c.route.eq1} | {ms1} | {c.route.eq2} | {ms2} | {c.how} |"
            )
        return "\n".join(lines)

    # ---- internals --------------------------------------------------------------------------

    def _packing(self, gemm: SparseGemm) -> SparseGemm:
        if not self.pack_cache:  # the setting turns the gemm's pack cache off
            gemm.cache_packs = False
        return gemm

    def _record(self, weight, kind, plan, geom) -> LayerRecord:
        rec = self.layers.get(weight)
        if rec is None:
            _, n1, _, n2 = eligible_kernels(kind, weight.shape, geom, plan)
            rec = LayerRecord(kind, (n1, n2))
            self.layers[weight] = rec
        return rec

    def _compute_dtype(self, x) -> torch.dtype:
        dt = autocast_dtype(x) or x.dtype
        if dt not in self.gemm.dtypes:
            raise SparseGemmError(
                f"backend=sparse24 multiplies 2:4 operands in {' or '.join(map(str, self.gemm.dtypes))} "
                f"but this layer computes in {dt} (cuSPARSELt's float32 is 1:2, not 2:4); train "
                "under torch.autocast('cuda', dtype=torch.bfloat16) (trainer.precision=bf16), "
                "or use backend=native for float32"
            )
        return dt

    def _route(self, kind, x, weight, bias, geom, plan) -> Route | None:
        """The kernels for this call; None: run as native (fallback or nothing sparse).

        A known route is dict lookups only, which ``torch.compile`` traces (no graph break);
        an unknown one is decided by :meth:`_decide`, outside any graph.
        """
        rec = self.layers.get(weight)
        if rec is not None and rec.fallback:
            return None
        key = self._key(x)
        route = None if rec is None else rec.routes.get(key)
        if route is None:
            return self._decide(kind, x, weight, bias, geom, plan, key)
        rec.last_key = key
        return None if route.is_dense else route

    def _key(self, x) -> tuple:
        """(shape, channels_last, compute dtype, needs dX, device): what a route is chosen for."""
        dt = autocast_dtype(x) or x.dtype
        need_x = torch.is_grad_enabled() and x.requires_grad
        cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return (tuple(x.shape), cl, dt, need_x, x.device)

    @torch.compiler.disable
    def _decide(self, kind, x, weight, bias, geom, plan, key) -> Route | None:
        """Check device and dtype, then time, pick and check the kernels of a new ``key``.

        Runs eagerly even inside a compiled model: it times kernels on the real input. There
        it is a graph break the first time a layer meets a new key, and torch 2.14's dynamo
        keeps running the pieces it compiled around the breaks (it does not recompile the
        model as one graph once the route is recorded), so :func:`fst.compile.compile_model`
        runs each new input signature's first call eagerly and this never runs in a graph.
        """
        rec = self._record(weight, kind, plan, geom)
        if rec.fallback:
            return None
        self.gemm.check_device(x.device)
        self._compute_dtype(x)
        _, cl, dt, need_x, _ = key
        route = rec.routes.get(key)
        if route is None:
            route = self._choose(kind, x, weight, bias, geom, plan, dt, need_x, cl)
            rec.routes[key] = route
            if self.verify and not route.is_dense:
                self._check(rec, key, kind, x, weight, bias, geom, plan, route, need_x)
                if rec.fallback:
                    return None
        rec.last_key = key
        return None if route.is_dense else route

    def _choose(self, kind, x, weight, bias, geom, plan, dt, need_x, cl) -> Route:
        k1, _, k2, _ = eligible_kernels(kind, weight.shape, geom, plan)
        if not need_x:
            k2 = ["none"]
        if self.mode == "dense":
            return Route("dense", k2[0])
        ckey = (kind, tuple(x.shape), tuple(weight.shape), geom, tuple(k1), tuple(k2), dt, cl)
        choice = self.choices.get(ckey)
        if choice is None:
            if self.mode == "sparse":
                pick = [next((k for k in SPARSE_PREFERENCE if k in ks), ks[0]) for ks in (k1, k2)]
                choice = Choice(Route(*pick), how="sparse mode")
            else:
                choice = self._time(kind, x, weight, bias, geom, plan, dt, k1, k2, cl)
            self.choices[ckey] = choice
            log.info("sparse24 %s: %s", ckey[:4], choice)
        return choice.route

    def _trial(self, kind, x, weight, bias, geom, plan, dt, cl, need_x):
        """The kernel tables of ``kind``, the arguments of Eq. 1 on this input and, if
        ``need_x``, of Eq. 2 with a random dY (else None), and the dense Eq. 1 output."""
        eq1, eq2 = (CONV_EQ1, CONV_EQ2) if kind == "conv" else (LINEAR_EQ1, LINEAR_EQ2)
        w_fwd, w_bwd = weight_operands(weight, plan, need_bwd=need_x)
        b = None if bias is None else bias.detach()
        xc, wf, wb, b = cast(dt, x.detach(), w_fwd, w_bwd, b)
        args1 = (xc, wf, b, geom) if kind == "conv" else (xc, wf, b)
        y, args2 = eq1["dense"](self.gemm, *args1), None
        if need_x:  # a private generator: choosing kernels must not move the global RNG
            gen = torch.Generator(device=x.device).manual_seed(0)
            dy = torch.randn(y.shape, generator=gen, device=x.device, dtype=dt)
            if cl:
                dy = dy.contiguous(memory_format=torch.channels_last)
            args2 = (dy, xc.shape, wb, geom, plan) if kind == "conv" else (dy, wb, plan)
        return eq1, eq2, args1, args2, y

    def _time(self, kind, x, weight, bias, geom, plan, dt, k1, k2, cl) -> Choice:
        """Time every eligible kernel of Eq. 1 and Eq. 2 once on this shape; keep the fastest."""
        choice, dev = Choice(Route("dense", "dense")), x.device
        with torch.no_grad(), torch.autocast(dev.type, enabled=False):
            trial = self._trial(kind, x, weight, bias, geom, plan, dt, cl, k2 != ["none"])
            eq1, eq2, args1, args2, _ = trial
            for k in k1:
                self._time_one(choice.eq1_ms, choice.errors, f"eq1:{k}", dev, eq1[k], args1)
            for k in k2 if args2 else ():
                self._time_one(choice.eq2_ms, choice.errors, f"eq2:{k}", dev, eq2[k], args2)
        route1 = min(choice.eq1_ms, key=choice.eq1_ms.get, default="dense")
        route2 = min(choice.eq2_ms, key=choice.eq2_ms.get, default="dense") if args2 else "none"
        choice.route = Route(route1, route2)
        return choice

    def _time_kernel(self, fn, device, label) -> float:
        """ms of one call: host cost included (``eager``) or not (``graph``, a CUDA graph replay)."""
        if self.timing == "graph" and device.type == "cuda":
            try:
                return graph_ms(fn, device)
            except Exception as e:  # capture refused: time it as eager runs it
                log.warning(
                    "sparse24: %s cannot be timed in a CUDA graph (%s); timing eagerly", label, e
                )
        return time_ms(fn, device)

    def _time_one(self, out, errors, label, device, fn, args):
        try:
            out[label.split(":")[1]] = self.timer(lambda: fn(self.gemm, *args), device, label)
        except Exception as e:  # a kernel that fails on this shape is not a candidate
            errors[label] = f"{type(e).__name__}: {e}"
            log.warning("sparse24: %s failed on this shape, not used: %s", label, e)

    def _check(self, rec, key, kind, x, weight, bias, geom, plan, route, need_x) -> None:
        """Compare the route's Eq. 1 and Eq. 2 with the dense kernels on this input."""
        errs = []
        try:
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                trial = self._trial(kind, x, weight, bias, geom, plan, key[2], key[1], need_x)
                eq1, eq2, args1, args2, y = trial
                if route.eq1 != "dense":
                    errs.append(("eq1", _rel_err(eq1[route.eq1](self.gemm, *args1), y)))
                if route.eq2 not in ("dense", "none"):
                    ref = eq2["dense"](self.gemm, *args2)
                    errs.append(("eq2", _rel_err(eq2[route.eq2](self.gemm, *args2), ref)))
        except Exception as e:
            self._fall_back(rec, f"check failed: {type(e).__name__}: {e}")
            return
        bad = [f"{eq} rel. err {err:.3g} > tol {self.tol:g}" for eq, err in errs if err > self.tol]
        if bad:
            self._fall_back(rec, "mismatch vs native: " + ", ".join(bad))
            return
        rec.checks[key] = "checked vs native: " + ", ".join(f"{eq} {err:.1e}" for eq, err in errs)

    def _fall_back(self, rec, reason: str) -> None:
        rec.fallback = reason
        log.warning("sparse24: a %s layer falls back to native: %s", rec.kind, reason)


BACKENDS.register("sparse24", Sparse24Backend())
