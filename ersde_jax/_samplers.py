"""One-call samplers: the paper's solvers with their defaults, on the one scan driver."""

from __future__ import annotations

from ._model import Model
from ._sample import sample
from ._solvers.er_sde import er_sde

__all__ = ["ersde_sample"]


def ersde_sample(
    key,
    model: Model,
    x_T,
    *,
    steps: int | None = None,
    order: int = 3,
    noise_scale="er_sde_5",
    eta=1.0,
    s_noise=1.0,
    timesteps=None,
    derivative: str = "quadratic",
    riemann_points: int | None = None,
    noise_scale_params=None,
    mu=None,
    cond=None,
):
    """Samples with an ER-SDE-Solver (Cui et al., section 4, eqs. for orders 1-3).

    ``jax.jit(ersde_sample)(key, model, x_T)`` compiles the whole sampler into one program:
    20 network evaluations of ER-SDE-Solver-3 with ``phi(x) = x (exp(x^0.3) + 10)`` on the
    Karras grid of the model's path.

    Args:
        key: a ``jax.random`` key, or one key per sample.
        model: the :class:`~ersde_jax.Model`.
        x_T: starting noise, e.g. ``ej.prior_sample(key, model.path, shape)``.
        steps: number of network evaluations (NFE); default 20.
        order: 1, 2 or 3.
        noise_scale: "ode", "sde", "er_sde_1" ... "er_sde_5", or a callable ``phi(rho)``.
        eta: ``phi_eta = x^(1-eta) phi^eta`` interpolates from the ODE (0) to ``phi`` (1).
        s_noise: scale of the injected noise (1 = the paper).
        timesteps: decreasing grid of ``steps + 1`` model times (sigmas for ``edm``, indices
            for ``vp_discrete``); default Karras (rho = 7) ending at ``sigma = 0``.
        derivative: "quadratic" (default, true third order) or "backward" (the release's).
        riemann_points: reproduce the release's N-point Riemann sums instead of quadrature.
        noise_scale_params: parameters of a callable ``phi(rho, params)``.
        mu: mean of a mean-reverting path (the solver then acts on ``x - mu``); default 0.
        cond: conditioning passed to ``apply_fn`` (defaults to ``mu`` when given).

    Returns:
        The samples, shaped and typed like ``x_T``.

    Example:
        >>> x0 = jax.jit(ej.ersde_sample)(key, model, x_T)
    """
    solver = er_sde(
        order, noise_scale, eta=eta, s_noise=s_noise, derivative=derivative,
        riemann_points=riemann_points, noise_scale_params=noise_scale_params,
    )
    return sample(key, model, x_T, solver, steps=steps, timesteps=timesteps, mu=mu, cond=cond).x
