"""Backends that execute a :class:`fst.strategies.Strategy` for Conv2d and Linear layers.

``BACKENDS[name]`` is a :class:`Backend`; keys are ``configs/backend/*.yaml`` stems:

- ``reference``: literal, in the im2col domain (unfold, masked matrices, einsum). The oracle.
- ``native``: fastest with dense kernels on any device (cuDNN / oneDNN convolutions with
  masked weights; ``fst``/``fst_noir`` compute Eq. 3 on the kept half only).
"""

from fst.ops import native, reference  # noqa: E402,F401  (fill BACKENDS)
from fst.ops.base import BACKENDS, Backend, ConvGeometry

__all__ = ["BACKENDS", "Backend", "ConvGeometry"]
