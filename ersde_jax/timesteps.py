"""Time grids: Karras, uniform in t, uniform in lambda; all end at sigma = 0 by default."""

from ._timesteps import karras as karras
from ._timesteps import uniform_lambda as uniform_lambda
from ._timesteps import uniform_t as uniform_t

__all__ = ["karras", "uniform_t", "uniform_lambda"]
