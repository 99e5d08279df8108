"""Time grids: Karras, uniform (or SD3-shifted) in t, uniform in lambda, leading, trailing."""

from ._grid import default_timesteps as default
from ._timesteps import karras as karras
from ._timesteps import karras_t as karras_t
from ._timesteps import leading as leading
from ._timesteps import shifted_uniform_t as shifted_uniform_t
from ._timesteps import trailing as trailing
from ._timesteps import uniform_lambda as uniform_lambda
from ._timesteps import uniform_t as uniform_t

__all__ = [
    "default", "karras", "karras_t", "uniform_t", "shifted_uniform_t", "uniform_lambda", "leading",
    "trailing",
]
