"""Time grids: Karras, uniform in t, uniform in lambda, leading, trailing; ending at sigma = 0."""

from ._timesteps import karras as karras
from ._timesteps import karras_t as karras_t
from ._timesteps import leading as leading
from ._timesteps import trailing as trailing
from ._timesteps import uniform_lambda as uniform_lambda
from ._timesteps import uniform_t as uniform_t

__all__ = ["karras", "karras_t", "uniform_t", "uniform_lambda", "leading", "trailing"]
