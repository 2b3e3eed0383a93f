"""Tasks: what one training step and one evaluation mean for a kind of model.

The engine has one loop; a task supplies the step (batch -> loss dict) and the evaluator.
Keys are the values of the ``task`` config field.
"""

from fst.registry import Registry

TASKS = Registry("task")

from . import classification, detection  # noqa: E402,F401  (fill TASKS)
