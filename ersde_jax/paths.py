"""Gaussian paths ``x_t = mu + alpha_t (x0 - mu) + sigma_t eps`` (MATH.md section 1)."""

from ._path import EDM as EDM
from ._path import IRSDE as IRSDE
from ._path import Flow as Flow
from ._path import GaussianPath as GaussianPath
from ._path import VPCosine as VPCosine
from ._path import VPDiscrete as VPDiscrete
from ._path import VPLinear as VPLinear
from ._path import edm as edm
from ._path import flow as flow
from ._path import ir_sde as ir_sde
from ._path import rescale_zero_terminal_snr as rescale_zero_terminal_snr
from ._path import vp_cosine as vp_cosine
from ._path import vp_discrete as vp_discrete
from ._path import vp_linear as vp_linear

__all__ = [
    "GaussianPath", "EDM", "VPLinear", "VPCosine", "VPDiscrete", "Flow", "IRSDE",
    "edm", "vp_linear", "vp_cosine", "vp_discrete", "flow", "ir_sde", "rescale_zero_terminal_snr",
]
