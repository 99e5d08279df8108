"""The building blocks of a solver of your own (see ``tests/test_custom_solver.py``).

A solver is a frozen dataclass registered with :func:`pytree_dataclass` that subclasses
:class:`AbstractSolver` (any step) or :class:`AbstractLinearMultistep` (a step linear in the
state, the last three predictions and the noise: supply ``regular_coefficients`` only).
"""

from ._numerics import pytree_dataclass as pytree_dataclass
from ._solvers.base import AbstractLinearMultistep as AbstractLinearMultistep
from ._solvers.base import AbstractSolver as AbstractSolver
from ._solvers.base import LinearTable as LinearTable
from ._solvers.base import StepCoefficients as StepCoefficients
from ._solvers.base import StepOutput as StepOutput
from ._solvers.base import current_only as current_only
from ._solvers.base import data_target as data_target
from ._solvers.base import divided_difference_weights as divided_difference_weights
from ._solvers.base import history_points as history_points
from ._solvers.base import noise_target as noise_target

__all__ = [
    "pytree_dataclass", "AbstractSolver", "AbstractLinearMultistep", "LinearTable",
    "StepCoefficients", "StepOutput", "current_only", "data_target", "noise_target",
    "divided_difference_weights", "history_points",
]
