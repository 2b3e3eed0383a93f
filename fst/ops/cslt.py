"""One 2:4 sparse GEMM, ``C = A @ B`` with ``A`` 2:4 along its rows, on cuSPARSELt or emulated.

This is the only module that calls PyTorch's cuSPARSELt operators. What it relies on (PyTorch
``aten/src/ATen/native/sparse/cuda/cuSPARSELtOps.cpp``, ``torch/_meta_registrations.py`` and
``torch/sparse/semi_structured.py``; the same in torch 2.4 to 2.14):

- ``torch._cslt_compress(A)``: ``A`` is a 2-D (M, K) **row-major contiguous** tensor (its
  ``size(1)`` is passed as the leading dimension), already pruned so that every group of 4
  consecutive entries along K (a row) has at most 2 nonzeros. It does not prune: other
  patterns give wrong products. Returns a 1-D tensor (values + metadata) from which the
  product infers M as ``numel * 16 / 9 / K`` (16-bit types).
- ``torch._cslt_sparse_mm(packed, B, bias=None, alpha=None, out_dtype=None,
  transpose_result=False, alg_id=0, ...)``: ``C = A @ B`` with ``B`` dense (K, N). ``B`` is
  read row-major when ``B.is_contiguous()`` and **column-major otherwise** (no other stride
  is checked: a (K, N) view that is neither, e.g. a strided slice, is read as garbage), so
  pass either a contiguous (K, N) or ``X.t()`` of a contiguous (N, K) ``X``. The result is
  (M, N) row-major, or with ``transpose_result=True`` the (N, M) row-major tensor ``C^T``
  (the product written column-major, no extra pass). ``bias`` has M entries (one per row of
  ``A``), same dtype as the inputs.
- dtypes: bfloat16 and float16 are 2:4 (fp32 accumulate, CUSPARSE_COMPUTE_32F); float32 is
  **1:2** in cuSPARSELt (and unsupported on Hopper with cuSPARSELt 0.6), int8/fp8 are not used
  here. So only bf16/fp16 can run fst's 2:4 GEMMs exactly.
- shapes: ``torch.sparse.SparseSemiStructuredTensorCUSPARSELT`` requires the sparse operand's
  M and K to be multiples of 16 and pads the dense operand to multiples of 8 for 16-bit types;
  we pad the same way (zero rows/columns; a zero group is 2:4) and slice the result.
- hardware: sparse tensor cores exist from compute capability 8.0 (A100, H100, ...).
- ``alg_id`` 0 is the library's default algorithm; ``torch._cslt_sparse_mm_search`` returns a
  faster one for a given problem (optional here: ``CusparseltGemm(search_alg=True)``).
- cuSPARSELt handles are thread-local in PyTorch (autograd runs backward on its own thread).

:meth:`SparseGemm.matmul` (compress + multiply, what every kernel of :mod:`fst.ops.sparse24`
calls) is, under ``torch.compile``, one call of the custom op ``fst::sparse24_mm``
(:func:`sparse24_mm`; its fake kernel gives the (M, N) / (N, M) contiguous result), because
``torch._cslt_compress`` has no fake/meta kernel: the compressed operand never enters a graph,
and the data-dependent work (:class:`EmulatedGemm`'s 2:4 check and ``calls`` counts,
cuSPARSELt's algorithm search) runs inside the op at run time. An op takes no Python object,
so the gemm is named by its int :attr:`SparseGemm.handle` (a table of live instances).

Host cost (``results/gpu/``: ~0.6-0.7 ms per eager call with torch 2.11, which builds and
destroys a cuSPARSELt plan inside every ``torch._cslt_sparse_mm``), two caches:

- **plans**: :class:`PlanCache` keeps one matmul plan per :class:`PlanKey` (shape, dtype,
  layout of ``B`` and of the result, algorithm, device) for the life of the gemm. The
  :class:`CusparseltGemm` runs its products through a :class:`PlanDriver` that owns the
  cuSPARSELt handle and plans (:mod:`fst.ops.cslt_cupy`: CuPy's cuSPARSELt bindings, present
  on the GPU image), checks each new plan once against ``torch._cslt_sparse_mm`` and falls back
  to it for good on a mismatch or error, or where the driver cannot run (no CuPy, a non-default
  stream: CuPy's binding runs on CUDA's default stream; during CUDA-graph capture, where host
  cost does not matter). ``FST_CUSPARSELT_DRIVER`` = ``auto`` (default) | ``cupy`` | ``torch``.
  :class:`EmulatedGemm` keys and counts plans the same way, so the CPU tests check the keys.
- **packs**: a weight operand is compressed once per optimizer step, not once per call:
  :meth:`SparseGemm.owned` names the parameter an operand is derived from, and
  :meth:`SparseGemm.compress_cached` reuses the compressed operand while the parameter's
  version counter (bumped by every in-place update: ``optimizer.step()``, ``copy_``,
  ``load_state_dict``), storage and the operand's shape and dtype are unchanged. The
  ``sparse24`` backend's ``pack_cache=false`` turns it off. (Writes through ``param.data``
  bypass the version counter: call :meth:`SparseGemm.clear_packs` after such a write.)

:class:`EmulatedGemm` runs the same padding and layout logic with a dense matmul of the masked
``A`` and *checks* what cuSPARSELt silently assumes (2:4 along rows, row-major ``A``,
row/column-major ``B``, alignment after padding): the CPU tests of :mod:`fst.ops.sparse24` run
on it, and on a GPU it isolates kernel problems from layout problems.
"""

from __future__ import annotations

import itertools
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fst.masks import is_nm

log = logging.getLogger(__name__)

__all__ = [
    "ALIGN_DENSE",
    "ALIGN_SPARSE",
    "CusparseltGemm",
    "EmulatedGemm",
    "Packed",
    "PlanCache",
    "PlanDriver",
    "PlanKey",
    "SparseGemm",
    "SparseGemmError",
    "cusparselt_version",
    "gemm_of",
    "require_sparse_tensor_cores",
    "sparse24_mm",
]

#: M and K of the sparse operand are padded to multiples of this (16-bit types).
ALIGN_SPARSE = 16
#: N of the dense operand is padded to a multiple of this.
ALIGN_DENSE = 8

FIX = "use backend=native (masked dense kernels, same results)"


class SparseGemmError(RuntimeError):
    """The sparse GEMM cannot run here or was given operands it would misread."""


def _ceil(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass
class Packed:
    """A compressed 2:4 operand ``A`` (M, K), 2:4 along K; ``data`` is backend specific."""

    data: torch.Tensor
    shape: tuple[int, int]  # (M, K) before padding
    padded: tuple[int, int]  # (M, K) as compressed


def cusparselt_version() -> int | None:
    """cuSPARSELt's version as PyTorch reports it (e.g. 602 for 0.6.2), or None."""
    backend = getattr(torch.backends, "cusparselt", None)
    if backend is None or not backend.is_available():
        return None
    return backend.version()


def require_sparse_tensor_cores(device: torch.device) -> None:
    """Raise :class:`SparseGemmError` (naming the fix) unless ``device`` can run cuSPARSELt 2:4."""
    if device.type != "cuda":
        raise SparseGemmError(
            f"backend=sparse24 runs its 2:4 GEMMs on NVIDIA sparse tensor cores, but this input "
            f"is on {device.type}; {FIX}, or run on a CUDA GPU of compute capability >= 8.0"
        )
    if not torch.cuda.is_available():
        raise SparseGemmError(f"backend=sparse24: CUDA is not available; {FIX}")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise SparseGemmError(
            f"backend=sparse24: {torch.cuda.get_device_name(device)} has compute capability "
            f"{major}.{minor}; sparse tensor cores need >= 8.0 (A100, H100, ...); {FIX}"
        )
    if cusparselt_version() is None:
        raise SparseGemmError(
            f"backend=sparse24: this torch {torch.__version__} build has no cuSPARSELt "
            f"(torch.backends.cusparselt.is_available() is False); install a CUDA build of "
            f"PyTorch from pytorch.org, or {FIX}"
        )


def check_dense_layout(b: torch.Tensor) -> None:
    """``b`` (K, N) must be row-major (contiguous) or column-major (``b.t()`` contiguous)."""
    if b.dim() != 2:
        raise SparseGemmError(f"dense operand must be 2-D, got shape {tuple(b.shape)}")
    if not (b.is_contiguous() or b.t().is_contiguous()):
        raise SparseGemmError(
            f"dense operand {tuple(b.shape)} with strides {b.stride()} is neither row- nor "
            "column-major; cuSPARSELt would misread it (make it contiguous first)"
        )


@dataclass(frozen=True)
class PlanKey:
    """What one cuSPARSELt matmul plan is for: ``C = A @ B``, A (m, k) 2:4 along k (padded),
    B (k, n) row-major (``b_row_major``) or column-major, C (m, n) or its transpose (n, m)
    row-major (``transpose_result``), in ``dtype``, with algorithm ``alg`` on ``device``."""

    m: int
    k: int
    n: int
    dtype: torch.dtype
    b_row_major: bool
    transpose_result: bool
    alg: int
    device: str

    @classmethod
    def of(cls, m: int, b: torch.Tensor, transpose_result: bool, alg: int = 0) -> PlanKey:
        k, n = b.shape
        return cls(m, k, n, b.dtype, b.is_contiguous(), bool(transpose_result), alg, str(b.device))


class PlanCache:
    """Plans by :class:`PlanKey`, each built once by ``build(key)``; ``builds`` and ``hits``
    count, for tests and ``bench_gemm.py``."""

    def __init__(self, build: Callable[[PlanKey], object]):
        self.build = build
        self.plans: dict[PlanKey, object] = {}
        self.builds = 0
        self.hits = 0

    def get(self, key: PlanKey):
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self.build(key)
            self.builds += 1
        else:
            self.hits += 1
        return plan

    def clear(self) -> None:
        self.plans.clear()

    def __len__(self) -> int:
        return len(self.plans)


class PlanDriver:
    """A library that runs ``C = A @ B`` from a persistent plan (see :mod:`fst.ops.cslt_cupy`).

    ``build(key)`` makes the plan (handle, descriptors, algorithm, workspace); ``matmul(plan,
    data, b)`` multiplies the compressed ``data`` (from ``torch._cslt_compress``: the compressed
    layout depends on the operand's descriptor only, not on a plan) by ``b`` on the current
    stream and returns a new tensor shaped as the key says; ``usable(device)`` says whether it
    can run now (e.g. on this stream).
    """

    name = "base"

    def usable(self, device: torch.device) -> bool:
        raise NotImplementedError

    def build(self, key: PlanKey):
        raise NotImplementedError

    def matmul(self, plan, data: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


#: Plan drivers by name, registered by their modules (:mod:`fst.ops.cslt_cupy` adds ``"cupy"``;
#: ``fst.ops`` imports it), so that this module imports none of them.
PLAN_DRIVERS: dict[str, type[PlanDriver]] = {}


class _Owned:
    """A gemm whose :meth:`matmul` compresses ``a`` through the per-step pack cache of
    ``owner`` (the parameter ``a`` is derived from) under ``tag`` (which operand of it)."""

    def __init__(self, gemm: SparseGemm, owner: torch.Tensor, tag: str):
        self.gemm, self.owner, self.tag = gemm, owner, tag

    def matmul(self, a, b, bias=None, transpose_result=False):
        packed = self.gemm.compress_cached(a, self.owner, self.tag)
        return self.gemm.mm(packed, b, bias, transpose_result)


# Live SparseGemm instances by handle: the custom op takes the int, not the object.
_LIVE: weakref.WeakValueDictionary[int, SparseGemm] = weakref.WeakValueDictionary()
_HANDLES = itertools.count()


class SparseGemm:
    """``C = A @ B`` with ``A`` (M, K) 2:4 along K, compressed once and used for several B.

    Subclasses implement ``_compress`` (on the padded, row-major ``A``) and ``_mm`` (on
    padded operands). ``dtypes``: compute dtypes this implementation runs exactly.
    """

    name = "base"
    dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
    #: This instance's key in the table of live gemms (:func:`gemm_of`), given at creation.
    handle: int

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.handle = next(_HANDLES)
        _LIVE[self.handle] = self
        return self

    def __getstate__(self):
        # a copy (deepcopy, pickle) gets its own handle from __new__, not this one's, and no
        # cached packs (they belong to the original's parameters)
        return {k: v for k, v in self.__dict__.items() if k not in ("handle", "_packs")}

    #: Reuse compressed weight operands within an optimizer step (see the module docstring).
    cache_packs: bool = True

    def check_device(self, device: torch.device) -> None:
        """Raise :class:`SparseGemmError` if this implementation cannot run on ``device``."""

    def owned(self, owner: torch.Tensor, tag: str):
        """This gemm, with :meth:`matmul` compressing through the pack cache of parameter
        ``owner`` under ``tag`` (e.g. ``"eq1"``); plain ``self`` when packs are not cached,
        inside ``torch.compile`` (the custom op compresses at run time) and during CUDA-graph
        capture (replays run no host code: a cache hit would freeze the weights)."""
        if not self.cache_packs or torch.compiler.is_compiling():
            return self
        if owner.is_cuda and torch.cuda.is_current_stream_capturing():
            return self  # a replayed graph must compress the weights its own steps update
        return _Owned(self, owner, tag)

    def compress_cached(self, a: torch.Tensor, owner: torch.Tensor, tag: str) -> Packed:
        """:meth:`compress`, reused while ``owner`` (a parameter) is unchanged: same version
        counter, storage, and ``a``'s shape and dtype. ``pack_hits`` / ``pack_misses`` count."""
        packs = self.__dict__.setdefault("_packs", {})
        key = (id(owner), tag)
        stamp = (owner._version, owner.data_ptr(), tuple(a.shape), a.dtype, a.device)
        hit = packs.get(key)
        if hit is not None and hit[0] == stamp:
            self.pack_hits = getattr(self, "pack_hits", 0) + 1
            return hit[1]
        packed = self.compress(a)
        if hit is None:  # the entry goes with its parameter (ids are reused)
            weakref.finalize(owner, packs.pop, key, None)
        packs[key] = (stamp, packed)
        self.pack_misses = getattr(self, "pack_misses", 0) + 1
        return packed

    def clear_packs(self) -> None:
        """Forget every cached compressed operand (after writes through ``param.data``)."""
        self.__dict__.get("_packs", {}).clear()

    def matmul(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        bias: torch.Tensor | None = None,
        transpose_result: bool = False,
    ) -> torch.Tensor:
        """``A @ b``: :meth:`compress` ``a`` (M, K), 2:4 along K, then :meth:`mm` with ``b`` (K, N).

        Returns (M, N), or (N, M) if ``transpose_result``, contiguous. Eagerly it is exactly
        ``mm(compress(a), b, ...)``; under ``torch.compile`` it is one call of the custom op
        :func:`sparse24_mm` (the same two calls at run time), so no graph sees the compressed
        operand, which has no fake kernel in torch.
        """
        if torch.compiler.is_compiling():
            return sparse24_mm(a, b, bias, transpose_result, self.handle)
        return self.mm(self.compress(a), b, bias, transpose_result)

    def check_sparse(self, a: torch.Tensor) -> None:
        """Raise :class:`SparseGemmError` unless ``a`` can be compressed (shape and dtype only)."""
        if a.dim() != 2:
            raise SparseGemmError(f"sparse operand must be 2-D, got shape {tuple(a.shape)}")
        if a.dtype not in self.dtypes:
            raise SparseGemmError(
                f"{self.name}: sparse operand dtype {a.dtype} is not one of {self.dtypes}"
            )

    def compress(self, a: torch.Tensor) -> Packed:
        """Compress ``a`` (M, K), which must already be 2:4 along K (dim 1)."""
        self.check_sparse(a)
        m, k = a.shape
        mp, kp = _ceil(m, ALIGN_SPARSE), _ceil(k, ALIGN_SPARSE)
        if (mp, kp) != (m, k):
            a = F.pad(a, (0, kp - k, 0, mp - m))
        return Packed(self._compress(a.contiguous()), (m, k), (mp, kp))

    def mm(
        self,
        packed: Packed,
        b: torch.Tensor,
        bias: torch.Tensor | None = None,
        transpose_result: bool = False,
    ) -> torch.Tensor:
        """``A @ b`` for ``b`` (K, N) row- or column-major: (M, N), or (N, M) if transposed.

        ``bias`` (M,) is added to every column of ``A @ b``.
        """
        m, k = packed.shape
        mp, kp = packed.padded
        check_dense(m, k, packed.data.dtype, b)
        n = b.shape[1]
        np_ = _ceil(n, ALIGN_DENSE)
        if (kp, np_) != (k, n):
            b = _pad_dense(b, kp, np_)
        if bias is not None and mp != m:
            bias = F.pad(bias, (0, mp - m))
        c = self._mm(packed.data, b, bias, transpose_result)
        if (mp, np_) == (m, n):
            return c
        return c[:n, :m].contiguous() if transpose_result else c[:m, :n].contiguous()

    def _compress(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _mm(self, data, b, bias, transpose_result) -> torch.Tensor:
        raise NotImplementedError


def check_dense(m: int, k: int, dtype: torch.dtype, b: torch.Tensor) -> None:
    """Raise :class:`SparseGemmError` unless ``b`` can multiply an (m, k) ``dtype`` operand."""
    check_dense_layout(b)
    if b.shape[0] != k:
        raise SparseGemmError(f"A is {m}x{k} but B is {tuple(b.shape)}: K differs")
    if b.dtype != dtype:
        raise SparseGemmError(f"A is {dtype}, B is {b.dtype}: must match")


def _pad_dense(b: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Zero-pad ``b`` to (k, n), keeping it row- or column-major as it was."""
    if b.is_contiguous():
        return F.pad(b, (0, n - b.shape[1], 0, k - b.shape[0]))
    return F.pad(b.t(), (0, k - b.shape[0], 0, n - b.shape[1])).t()


class CusparseltGemm(SparseGemm):
    """PyTorch's cuSPARSELt operators (see the module docstring for their contract), with the
    products run from cached plans by a :class:`PlanDriver` where one is usable.

    ``driver``: ``"auto"`` (CuPy's bindings if they import, else torch), ``"cupy"``,
    ``"torch"`` (``torch._cslt_sparse_mm`` every call, a plan built each time), or a
    :class:`PlanDriver`; default from ``FST_CUSPARSELT_DRIVER``. ``driver_used`` says which
    one ran last (``"torch"`` after a fallback).
    """

    name = "cusparselt"

    def __init__(self, search_alg: bool = False, driver: str | PlanDriver | None = None):
        self.search_alg = search_alg
        self._alg: dict[tuple, int] = {}
        self._checked: set[torch.device] = set()
        choice = self.driver_choice = driver or os.environ.get("FST_CUSPARSELT_DRIVER", "auto")
        if isinstance(choice, str) and choice not in ("auto", "cupy", "torch"):
            raise ValueError(f"FST_CUSPARSELT_DRIVER={choice!r}; valid: auto, cupy, torch")
        self._driver: PlanDriver | None = None
        self._driver_ready = False
        self.driver_failure: str | None = None
        self.driver_used = "torch"
        self.plans = PlanCache(self._build_plan)

    def check_device(self, device):
        if device not in self._checked:
            require_sparse_tensor_cores(device)
            self._checked.add(device)

    def _compress(self, a):
        return torch._cslt_compress(a)

    @property
    def driver(self) -> PlanDriver | None:
        """The plan driver, made at first use; None: every product runs ``torch._cslt_*``."""
        if not self._driver_ready:
            self._driver_ready = True
            choice = self.driver_choice
            if isinstance(choice, PlanDriver):
                self._driver = choice
            elif choice in ("auto", "cupy"):
                try:
                    self._driver = PLAN_DRIVERS["cupy"]()
                except Exception as e:  # no CuPy / no cuSPARSELt binding: torch's operators
                    self.driver_failure = f"{type(e).__name__}: {e}"
                    log.log(
                        logging.WARNING if choice == "cupy" else logging.INFO,
                        "cuSPARSELt plan cache unavailable (%s); using torch._cslt_sparse_mm",
                        self.driver_failure,
                    )
        return self._driver

    def _build_plan(self, key: PlanKey):
        return self.driver.build(key)

    def _alg_for(self, data, b, bias, transpose_result) -> int:
        if not self.search_alg:
            return 0
        key = (data.numel(), tuple(b.shape), b.is_contiguous(), transpose_result, b.dtype)
        if key not in self._alg:
            try:
                self._alg[key] = int(
                    torch._cslt_sparse_mm_search(
                        data, b, bias=bias, transpose_result=transpose_result
                    )
                )
            except Exception as e:  # search is optional; the default algorithm always runs
                log.warning("cuSPARSELt alg_id search failed for %s (%s); using 0", key, e)
                self._alg[key] = 0
        return self._alg[key]

    def _mm(self, data, b, bias, transpose_result):
        alg = self._alg_for(data, b, bias, transpose_result)
        driver = self.driver
        if driver is not None and driver.usable(b.device):
            m = data.numel() * 16 // 9 // b.shape[0]  # 16-bit types: see the module docstring
            key = PlanKey.of(m, b, transpose_result, alg)
            try:
                fresh = key not in self.plans.plans
                c = driver.matmul(self.plans.get(key), data, b)
                if fresh:  # each new plan is checked once against torch's operator
                    self._check_plan(key, c, data, b, transpose_result, alg)
            except Exception as e:
                self._drop_driver(f"{type(e).__name__}: {e}")
            else:
                self.driver_used = driver.name
                if bias is not None:
                    c = c.add_(bias if transpose_result else bias[:, None])
                return c
        self.driver_used = "torch"
        return torch._cslt_sparse_mm(
            data, b, bias=bias, transpose_result=transpose_result, alg_id=alg
        )

    def _check_plan(self, key, c, data, b, transpose_result, alg) -> None:
        want = torch._cslt_sparse_mm(data, b, transpose_result=transpose_result, alg_id=alg)
        scale = want.float().abs().max().clamp_min(1e-12)
        err = float((c.float() - want.float()).abs().max() / scale)
        if not err <= 1e-2:
            raise SparseGemmError(f"plan {key} differs from torch._cslt_sparse_mm: {err:.3g}")

    def _drop_driver(self, why: str) -> None:
        log.warning("cuSPARSELt plan driver disabled (%s); using torch._cslt_sparse_mm", why)
        self.driver_failure = why
        self._driver = None
        self.plans.clear()


class EmulatedGemm(SparseGemm):
    """Dense matmul of the masked ``A`` after checking everything cuSPARSELt assumes.

    Runs on any device and dtype (``dtypes`` can be narrowed to test dtype errors); the
    product accumulates in float32 (float64 for float64 inputs) like cuSPARSELt's 32F
    compute. ``calls`` counts (compress, mm) calls, for tests.
    """

    name = "emulated"

    def __init__(self, dtypes=(torch.bfloat16, torch.float16, torch.float32, torch.float64)):
        self.dtypes = tuple(dtypes)
        self.calls = {"compress": 0, "mm": 0}
        self.plans = PlanCache(lambda key: key)  # keyed and counted as CusparseltGemm's

    def _compress(self, a):
        if not is_nm(a, dim=1):
            raise SparseGemmError(
                f"sparse operand {tuple(a.shape)} is not 2:4 along its rows (K); cuSPARSELt "
                "would compute a wrong product"
            )
        self.calls["compress"] += 1
        return a.clone()

    def _mm(self, data, b, bias, transpose_result):
        self.calls["mm"] += 1
        if data.shape[1] != b.shape[0] or data.shape[0] % ALIGN_SPARSE or b.shape[1] % ALIGN_DENSE:
            raise SparseGemmError(f"misaligned operands {tuple(data.shape)} @ {tuple(b.shape)}")
        self.plans.get(PlanKey.of(data.shape[0], b, transpose_result))
        acc = torch.float64 if data.dtype == torch.float64 else torch.float32
        c = data.to(acc) @ b.to(acc)
        if bias is not None:
            c = c + bias.to(acc)[:, None]
        c = c.to(b.dtype)
        return c.t().contiguous() if transpose_result else c


# --------------------------------------------------------------------------------------------
# the custom op: compress + mm as one opaque call under torch.compile
# --------------------------------------------------------------------------------------------


def gemm_of(handle: int) -> SparseGemm:
    """The live :class:`SparseGemm` with this ``handle`` (raises if it was garbage collected)."""
    gemm = _LIVE.get(handle)
    if gemm is None:
        raise SparseGemmError(
            f"no live SparseGemm has handle {handle}: a compiled graph outlived the gemm it was "
            "traced with (e.g. one from a finished `backend.emulate()`); torch._dynamo.reset() "
            "and compile again"
        )
    return gemm


# needs_exact_strides: inductor must hand ``b`` over in the layout traced (row- or column-major
# is what cuSPARSELt reads, and which one is the caller's choice).
@torch.library.custom_op("fst::sparse24_mm", mutates_args=(), tags=(torch.Tag.needs_exact_strides,))
def sparse24_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    transpose_result: bool,
    handle: int,
) -> torch.Tensor:
    """``gemm_of(handle).matmul(a, b, bias, transpose_result)`` run eagerly, as one op.

    ``a`` (M, K) 2:4 along K, ``b`` (K, N) row- or column-major, ``bias`` (M,) or None;
    returns a new contiguous (M, N), or (N, M) if ``transpose_result``, of ``b``'s dtype. The
    gemm is named by its int ``handle`` (:attr:`SparseGemm.handle`) because an op takes no
    Python objects; everything data dependent (EmulatedGemm's 2:4 check and call counts,
    cuSPARSELt's algorithm search) runs here, at run time.
    """
    gemm = gemm_of(handle)
    return gemm.mm(gemm.compress(a), b, bias, transpose_result)


@sparse24_mm.register_fake
def _(a, b, bias, transpose_result, handle):
    gemm = gemm_of(handle)
    gemm.check_sparse(a)
    m, k = a.shape
    check_dense(m, k, a.dtype, b)
    n = b.shape[1]
    return a.new_empty((n, m) if transpose_result else (m, n))
