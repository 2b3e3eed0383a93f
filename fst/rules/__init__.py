"""GEMM rules: what each of a layer's three GEMMs prunes (see :mod:`fst.rules.base`).

``FORWARD_RULES`` (Eq. 1), ``INPUT_GRAD_RULES`` (Eq. 2) and ``WEIGHT_GRAD_RULES`` (Eq. 3) hold
one default rule object per key; a :class:`fst.strategies.Strategy` holds one rule object of
each, with its options (``Fixed(ir_coef=1.0)``).
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
    check_option,
    operand_checks,
    option,
    weight_operands,
    with_state,
)

__all__ = [
    "FORWARD_RULES",
    "INPUT_GRAD_RULES",
    "WEIGHT_GRAD_RULES",
    "REGISTRIES",
    "Rule",
    "option",
    "check_option",
    "OperandCheck",
    "operand_checks",
    "weight_operands",
    "with_state",
]
