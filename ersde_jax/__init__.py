"""ersde_jax: fast, training-free samplers for diffusion models in JAX.

ER-SDE-Solvers (Cui et al.) and the MR Sampler (Li et al., ICLR 2025) on one semi-linear
Gaussian path ``x_t = mu + alpha_t (x0 - mu) + sigma_t eps``, compiled as one ``lax.scan``.
"""

from . import guidance as guidance
from . import metrics as metrics
from . import paths as paths
from . import presets as presets
from . import pretrained as pretrained
from . import solvers as solvers
from . import testing as testing
from . import timesteps as timesteps
from ._adjoint import FullAdjoint as FullAdjoint
from ._adjoint import RematAdjoint as RematAdjoint
from ._adjoint import TruncatedAdjoint as TruncatedAdjoint
from ._generate import generate as generate
from ._grid import Grid as Grid
from ._model import Model as Model
from ._noise import BrownianNoise as BrownianNoise
from ._noise import IndependentNoise as IndependentNoise
from ._noise_scale import NOISE_SCALES as NOISE_SCALES
from ._noise_scale import NoiseScale as NoiseScale
from ._noise_scale import noise_scale as noise_scale
from ._path import prior_sample as prior_sample
from ._prediction import PREDICTION_NAMES as PREDICTIONS
from ._prediction import Denoised as Denoised
from ._sample import SampleResult as SampleResult
from ._sample import StepInfo as StepInfo
from ._sample import sample as sample
from ._sample import transition_log_prob as transition_log_prob
from ._samplers import TIME_SCHEDULES as TIME_SCHEDULES
from ._samplers import ersde_sample as ersde_sample
from ._samplers import mr_grid as mr_grid
from ._samplers import mr_sample as mr_sample
from ._solvers.base import AbstractLinearMultistep as AbstractLinearMultistep
from ._solvers.base import AbstractSolver as AbstractSolver
from ._solvers.base import StepCoefficients as StepCoefficients
from ._solvers.ddim import DDIM as DDIM
from ._solvers.ddim import ddim as ddim
from ._solvers.edm import EDM as EDM
from ._solvers.edm import edm_heun as edm_heun
from ._solvers.edm import edm_stochastic as edm_stochastic
from ._solvers.er_sde import ERSDE as ERSDE
from ._solvers.er_sde import er_sde as er_sde
from ._solvers.euler import Euler as Euler
from ._solvers.euler import euler_maruyama as euler_maruyama
from ._solvers.euler import euler_ode as euler_ode
from ._solvers.mr import MR as MR
from ._solvers.mr import mr_ode as mr_ode
from ._solvers.mr import mr_sde as mr_sde

__version__ = "0.1.0"

__all__ = [
    "AbstractSolver", "AbstractLinearMultistep", "Grid", "Denoised", "IndependentNoise",
    "BrownianNoise", "FullAdjoint", "RematAdjoint", "TruncatedAdjoint", "solvers",
    "Model", "NOISE_SCALES", "NoiseScale", "noise_scale", "PREDICTIONS", "SampleResult",
    "StepInfo", "StepCoefficients", "ERSDE", "er_sde", "MR", "mr_ode", "mr_sde", "Euler",
    "DDIM", "ddim", "EDM", "edm_heun", "edm_stochastic",
    "euler_maruyama", "euler_ode", "sample", "transition_log_prob", "ersde_sample", "mr_sample",
    "mr_grid",
    "TIME_SCHEDULES", "prior_sample", "paths", "timesteps", "testing", "guidance", "metrics",
    "pretrained", "presets", "generate",
]
