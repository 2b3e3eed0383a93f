"""fst: fully sparse training with 2:4 structured sparsity.

>>> import fst, torchvision
>>> model = fst.sparsify(torchvision.models.resnet18(), strategy="fst", backend="native")
>>> print(fst.summary(model))
"""

from fst.convert import densify, sparsify, summary
from fst.ops import BACKENDS
from fst.sparsifier import SPARSIFIERS, Sparsifier, build_sparsifier
from fst.strategies import STRATEGIES, Strategy

__all__ = [
    "sparsify",
    "densify",
    "summary",
    "build_sparsifier",
    "STRATEGIES",
    "BACKENDS",
    "SPARSIFIERS",
    "Strategy",
    "Sparsifier",
]
__version__ = "0.1.0"
