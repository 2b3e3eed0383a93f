"""GEMM rules: what each of a layer's three GEMMs prunes (see :mod:`fst.rules.base`).

``FORWARD_RULES`` (Eq. 1), ``INPUT_GRAD_RULES`` (Eq. 2) and ``WEIGHT_GRAD_RULES`` (Eq. 3) hold
one rule object per key; a :class:`fst.strategies.Strategy` names one key of each.
"""

from fst.rules import (  # noqa: F401  (fill registries)
    forward,
    input_grad,
    meprop,
    mvue,
    released,
    resprop,
    weight_grad,
)
from fst.rules.base import (
    FORWARD_RULES,
    INPUT_GRAD_RULES,
    REGISTRIES,
    WEIGHT_GRAD_RULES,
    OperandCheck,
    Rule,
    operand_checks,
    weight_operands,
    with_state,
)

__all__ = [
    "FORWARD_RULES",
    "INPUT_GRAD_RULES",
    "WEIGHT_GRAD_RULES",
    "REGISTRIES",
    "Rule",
    "OperandCheck",
    "operand_checks",
    "weight_operands",
    "with_state",
]
