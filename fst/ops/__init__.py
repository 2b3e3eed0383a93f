"""Backends that execute a :class:`fst.strategies.Strategy` for Conv2d and Linear layers.

``BACKENDS[name]`` is the :class:`Backend` with its default settings, ``build_backend(name,
**settings)`` one with the other keys of ``configs/backend/<name>.yaml`` (keys: the stems):

- ``reference``: literal, in the im2col domain (unfold, masked matrices, einsum). The oracle.
- ``native``: fastest with dense kernels on any device (cuDNN / oneDNN convolutions with
  masked weights; ``fst``/``fst_noir`` compute Eq. 3 on the kept half only).
- ``sparse24``: Eq. 1 and 2 on NVIDIA 2:4 sparse tensor cores (cuSPARSELt, bf16, CUDA only),
  Eq. 3 as ``native``; per layer shape the faster of sparse and dense kernels.
"""

from fst.ops import cslt_cupy, native, reference, sparse24  # noqa: F401  (fill the registries)
from fst.ops.base import BACKENDS, Backend, ConvGeometry, build_backend

__all__ = ["BACKENDS", "Backend", "ConvGeometry", "build_backend"]
