"""AFDPS: approximation-free ensemble sampling with weighted particles (Chen et al. 2025), VP form.

The reverse clock runs the VP SDE from ``t = T-1`` (noise) to ``t = 0`` (clean). With the potential
``mu_y(x) = nll(y, A x)`` (``||A x - y||^2 / (2 sigma^2)`` for Gaussian noise), evaluated at the *noisy*
particle, the target family is ``Q(x, t) ∝ p_t(x) exp(-alpha(t) mu_y(x))``, so ``Q(., 0)`` is the
posterior (up to the ``1 - ab(0) = beta_start`` noise of the schedule's first step). Its Fokker-Planck
equation splits into a particle move and a reweighting (Feynman-Kac). With ``g = alpha grad mu_y``,
``s = s_theta(x, t)``, ``H = 1/2 beta x + 1/2 (beta + V^2) s`` the prior reverse drift (``F = -beta/2``,
``G^2 = beta``) and a likelihood-drift fraction ``c`` (``likelihood_drift``):

    x     <- x + h (H - c V^2 g) + V sqrt(h) xi
    log w <- log w + h [ (c - 1/2) V^2 (|g|^2 - alpha lap mu_y) - H . g + (1 - c) V^2 s . g ] - (d alpha) mu_y

all at the pre-move state. ``c = 1`` is the paper's Alg. 2 (rate ``1/2 V^2 (|g|^2 - lap) - H . g``).
Every ``c`` solves the same equation exactly in continuous time (moving ``(1 - c) V^2 g`` from the drift
into the weights adds ``(1 - c) V^2 (lap + s . g - |g|^2)`` to the rate), but the weight variance differs
a lot: ``c = 1/2`` makes the move a Langevin step for ``Q``, the Laplacian and ``|g|^2`` terms cancel
(rate ``-(1/2 beta (x + s)) . g``, no Hutchinson probes needed) and the weights stay constant whenever
``p_t`` does. On the closed-form Gaussian tests ``c = 1/2`` needs about an order of magnitude fewer
particles for the same error, so ``c = 1/2`` is the default (``c = 1`` reproduces the paper's Alg. 2). ``V^2 = beta`` for
the SDE variant; ``V = 0`` for the ODE variant, whose particles then get one Langevin corrector step at the
next time (it leaves ``Q(., t_next)`` approximately invariant, so the weights are unchanged). For a linear
operator with Gaussian noise the Laplacian ``lap mu_y = ||A||_F^2 / sigma^2`` is the same for every
particle and cancels in the normalised weights, so it is dropped; otherwise it is estimated with
Hutchinson probes. Weights are resampled (systematic) when ``ESS / K`` falls below
``resample_threshold``, and then reset.

Stage I (Alg. 1): the initial ensemble is drawn exactly from ``N(x; 0, I) exp(-mu_y(x))`` (``p_{T-1}`` is
``N(0, I)`` to within ``ab(T-1) ~ 4e-5`` for the linear schedule) for a linear operator with Gaussian noise:
the Gaussian with precision ``P = A^T A / sigma^2 + I`` and mean ``P^{-1} A^T y / sigma^2``, sampled by
perturb-and-MAP (``x = P^{-1} (A^T (y + sigma z_y) / sigma^2 + z_x)``, exact in distribution) with
conjugate gradients. With ``tempering="linear"`` (``alpha`` ramps 0 -> 1 linearly in the reverse clock)
Stage I is plain ``N(0, I)``; non-linear operators and non-Gaussian noise need it.

Stability. The likelihood drift is integrated by explicit Euler, stable only while
``h c beta(t) alpha(t) ||A||^2 / sigma^2 < 2``; with a linear operator this is checked before sampling and a
too-small ``steps`` is refused with the number needed (small ``sigma`` needs ``variant="ode"``).

References:
    Chen, Ren, Min, Ying, Izzo, "Solving Inverse Problems via Diffusion-Based Priors: An Approximation-Free
    Ensemble Sampling Approach", arXiv 2506.03979: Alg. 1 (SMC with resampling), Alg. 2 (SDE variant),
    Alg. 3/4 (ODE + corrector).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from torch import Tensor

from ..operators import GaussianNoise, LinearOperator, Operator, PoissonNoise, RicianNoise
from ..priors.base import Prior
from .reconstruction import (
    Callback,
    Reconstruction,
    cg_solve,
    check_choice,
    check_float,
    check_generator,
    check_int,
    check_problem,
    chunks,
    denoise,
    emit,
    item_dot,
    item_norm,
    progress_steps,
    randn_like_shape,
)

__all__ = ["smc"]

# Stage I reference density N(0, RHO^2 I): the VP marginal at t = T-1 for data of variance <~ 1.
_RHO = 1.0


def smc(
    prior: Prior,
    op: Operator,
    y: Tensor,
    *,
    noise: GaussianNoise | PoissonNoise | RicianNoise,
    particles: int = 16,
    steps: int = 100,
    variant: Literal["sde", "ode"] = "sde",
    resample_threshold: float = 0.5,
    tempering: Literal["linear"] | None = None,
    likelihood_drift: float = 0.5,
    hutchinson_probes: int = 1,
    corrector_step: float = 1e-3,
    cg_max_iter: int = 1000,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Reconstruction:
    """AFDPS ensemble sampler: weighted particles that follow the reverse VP SDE and track the posterior.

    Args:
        prior: the diffusion prior (``denoise(x_t, t)``) over real images of shape ``x_shape``.
        op: forward operator with ``op.x_shape == prior.x_shape``.
        y: ``(B, *op.y_shape)`` measurements, finite.
        noise: the measurement noise; ``GaussianNoise(sigma > 0)`` gives the exact Stage I and the constant
            Laplacian for linear operators. Other noise models (any ``nll``) need ``tempering="linear"``.
        particles: ``K`` particles per measurement (port default 16; more for accurate uncertainty).
        steps: Euler steps of the reverse clock from ``t = T-1`` to ``t = 0`` (port default 100), on an
            evenly spaced (fractional) time grid.
        variant: ``"sde"`` (Alg. 2, ``V^2 = beta``) or ``"ode"`` (Alg. 3/4, ``V = 0`` plus one unadjusted
            Langevin corrector step per time with step ``corrector_step``; its weight rate equals that of
            ``likelihood_drift=0.5``). The corrector is what separates particles duplicated by resampling:
            with ``corrector_step`` far below the posterior variance they stay duplicates (on the closed-form
            tests 1e-3 gave 0.35 posterior std of error, 1e-2 gave 0.05 plus a ``delta / (2 var)`` variance bias).
        resample_threshold: systematic resampling when ``ESS / K`` drops below it (port default 0.5);
            0 never resamples, 1 resamples every step. The last step never resamples.
        tempering: ``None`` (exact Stage I) or ``"linear"``: the likelihood is ``alpha(t) mu_y`` with
            ``alpha = 1 - t / (T-1)``, and the weights gain the value term ``-(d alpha) mu_y``.
        likelihood_drift: ``c`` in ``[0, 1]``, the fraction of ``V^2 grad mu_y`` put in the particle drift
            (the rest is carried by the weights; module docstring). 1 is the paper's Alg. 2; 0.5 (default) gives much
            lower weight variance, needs no Laplacian and halves the stiffness of the explicit step.
        hutchinson_probes: Rademacher probes per particle and step for the Laplacian of ``mu_y`` (only
            used by the SDE variant with ``likelihood_drift != 0.5`` when the Laplacian is not constant,
            i.e. non-linear ``op`` or non-Gaussian noise).
        corrector_step: Langevin step ``delta`` of the ODE variant's corrector (jma02 port default 1e-3);
            0 disables it.
        cg_max_iter: conjugate-gradient iterations allowed for the Stage I draw (converged items stop early;
            the largest relative residual is reported as ``diagnostics["cg_residual"]``).
        batch_size: rows (particle x measurement) per prior / operator evaluation.
        generator: the only source of randomness (on ``y``'s device).
        callback: called after each step with keys ``step, steps, t, x, x0_hat, misfit, ess, log_weights,
            particles``: ``x`` the weighted mean of the moved particles, ``x0_hat`` the weighted mean of the
            step's denoiser outputs, ``misfit`` the weighted mean of ``||A x_i - y||`` over pre-move particles
            (B,), ``ess`` (B,) before resampling, ``log_weights`` (B, K) and ``particles`` (B, K, *x_shape)
            after it.
        progress: show a progress bar on stderr.

    Returns:
        ``Reconstruction``: ``x`` the weighted posterior mean, ``std`` the weighted per-pixel standard
        deviation, ``samples`` the final particles ``(B, K, *x_shape)``, ``log_weights`` their normalised
        log-weights ``(B, K)``; diagnostics ``nfe`` (denoiser calls per measurement: ``K * steps``, twice
        that for the ODE variant with a corrector), ``wall_s``, ``misfit`` ``(steps, B)``, ``ess``
        ``(steps, B)`` (effective sample size, in particles), ``resampled`` ``(steps, B)`` bool,
        ``cg_residual`` ``(B,)`` (0 without a Stage I solve).

    Raises:
        TypeError: wrong argument types (see ``check_problem``).
        ValueError: bad hyperparameters, measurement shape or values; no ``tempering`` for a non-linear
            operator or non-Gaussian noise; ``steps`` too small for a stable explicit step.
        FloatingPointError: particles became non-finite (unstable step for a non-linear operator).

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> from invdiff.priors.gaussian import GaussianPrior
        >>> from invdiff.operators import GaussianNoise
        >>> from invdiff.operators.blur import Blur, gaussian_kernel
        >>> prior = GaussianPrior.diagonal(torch.zeros(1, 8, 8), 1.0, VPSchedule())
        >>> op = Blur(gaussian_kernel(1.0), (1, 8, 8))
        >>> out = smc(prior, op, torch.zeros(2, 1, 8, 8), noise=GaussianNoise(0.5), particles=4, steps=50,
        ...           generator=torch.Generator().manual_seed(0))
        >>> out.samples.shape, out.diagnostics["ess"].shape
        (torch.Size([2, 4, 1, 8, 8]), torch.Size([50, 2]))
    """
    who = "smc"
    start = time.perf_counter()
    dtype = check_problem(prior, op, y, who)
    if isinstance(noise, GaussianNoise):
        if not noise.sigma > 0:
            raise ValueError(f"{who}: noise.sigma must be > 0 (the likelihood of sigma=0 is degenerate), got {noise.sigma!r}")
    elif not callable(getattr(noise, "nll", None)):
        raise TypeError(f"{who}: noise must be a noise model with an nll(y, y_pred) method (e.g. GaussianNoise), got {type(noise).__name__}")
    K = check_int("particles", particles, who)
    check_int("steps", steps, who)
    check_choice("variant", variant, ("sde", "ode"), who)
    threshold = check_float("resample_threshold", resample_threshold, who, high=1.0)
    if tempering is not None:
        check_choice("tempering", tempering, ("linear",), who)
    c = check_float("likelihood_drift", likelihood_drift, who, high=1.0)
    probes = check_int("hutchinson_probes", hutchinson_probes, who)
    delta = check_float("corrector_step", corrector_step, who)
    check_int("cg_max_iter", cg_max_iter, who)
    check_int("batch_size", batch_size, who)
    check_generator(generator, y.device, who)
    linear_gaussian = isinstance(noise, GaussianNoise) and isinstance(op, LinearOperator)
    if not linear_gaussian and tempering is None:
        raise ValueError(
            f"{who}: the exact Stage I draw needs a LinearOperator with GaussianNoise (got {type(op).__name__}, "
            f"{type(noise).__name__}); use tempering='linear' (Stage I is then N(0, I))"
        )

    schedule = prior.schedule
    B, device = y.shape[0], y.device
    N = B * K
    sde = variant == "sde"
    corrector = not sde and delta > 0
    times = torch.linspace(schedule.T - 1, 0, steps + 1, dtype=torch.float64)
    alphas = (1 - times / (schedule.T - 1)) if tempering == "linear" else torch.ones_like(times)
    betas = schedule.beta(times[:-1])
    if linear_gaussian:
        _check_stability(op, noise, times, alphas, betas, c if sde else 0.0, delta if corrector else 0.0, y, dtype, who)
    item_of_row = torch.arange(N, device=device) // K  # row b * K + k belongs to measurement b

    # ---- Stage I (Alg. 1, line 1): the initial ensemble, all weights equal -----------------------------
    cg_residual = torch.zeros(B, dtype=torch.float64, device=device)
    if tempering is None:
        assert isinstance(noise, GaussianNoise) and isinstance(op, LinearOperator)
        z_y = randn_like_shape((N, *op.y_shape), dtype=y.dtype, device=device, generator=generator)
        z_x = torch.randn((N, *op.x_shape), dtype=dtype, device=device, generator=generator)
        x = torch.empty_like(z_x)
        res = torch.empty(N, dtype=torch.float64, device=device)
        for rows in chunks(N, batch_size):
            x[rows], res[rows] = _perturb_and_map(op, noise.sigma, y[item_of_row[rows]], z_y[rows], z_x[rows], cg_max_iter)
        cg_residual = res.view(B, K).amax(1)
        del z_y, z_x
    else:
        x = _RHO * torch.randn((N, *op.x_shape), dtype=dtype, device=device, generator=generator)
    log_w = torch.zeros(B, K, dtype=torch.float64, device=device)

    need_laplacian = sde and c != 0.5 and not linear_gaussian
    nfe_per_step = K * (2 if corrector else 1)
    misfits, esses, resampled = [], [], []
    for k in progress_steps(steps, progress, who):
        t, t_next = float(times[k]), float(times[k + 1])
        h, beta = t - t_next, float(betas[k])
        a, a_next = float(alphas[k]), float(alphas[k + 1])
        v2 = beta if sde else 0.0
        # All random numbers of the step for all rows at once, so the chunk size cannot change them.
        xi = torch.randn((N, *op.x_shape), dtype=dtype, device=device, generator=generator)
        probe = None
        if need_laplacian:
            probe = torch.randint(0, 2, (probes, N, *op.x_shape), device=device, generator=generator).to(dtype) * 2 - 1
        xi_corr = torch.randn((N, *op.x_shape), dtype=dtype, device=device, generator=generator) if corrector else None
        u = torch.rand(B, dtype=torch.float64, device=device, generator=generator)

        w_prev = torch.softmax(log_w, dim=1)
        x_new = torch.empty_like(x)
        x0_hat = torch.empty_like(x)
        d_log_w = torch.empty(N, dtype=torch.float64, device=device)
        misfit = torch.empty(N, dtype=torch.float64, device=device)
        for rows in chunks(N, batch_size):
            xr = x[rows]
            x0_hat[rows] = denoise(prior, xr, t)
            score = schedule.score_from_x0(xr, x0_hat[rows], torch.full((xr.shape[0],), t, dtype=torch.float64))
            nll, grad, lap, misfit[rows] = _potential(op, noise, y[item_of_row[rows]], xr, linear_gaussian,
                                                      None if probe is None else probe[:, rows])
            grad_a = a * grad
            # Alg. 2: H = -F x + 1/2 (G^2 + V^2) s with F = -beta/2, G^2 = beta.
            drift_h = 0.5 * beta * xr + 0.5 * (beta + v2) * score
            # Log-weight rate at the pre-move state (c = 1: Alg. 2; general c: module docstring); the value
            # term comes from alpha changing over the step.
            rate = (c - 0.5) * v2 * (item_dot(grad_a, grad_a) - a * lap) - item_dot(drift_h, grad_a)
            if c != 1.0:
                rate = rate + (1 - c) * v2 * item_dot(score, grad_a)
            d_log_w[rows] = h * rate.double() - (a_next - a) * nll.double()
            x_new[rows] = xr + h * (drift_h - c * v2 * grad_a) + math.sqrt(v2 * h) * xi[rows]
        if corrector:
            assert xi_corr is not None
            # Alg. 4: one unadjusted Langevin step that leaves Q(., t_next) (approximately) invariant.
            for rows in chunks(N, batch_size):
                xr = x_new[rows]
                x0c = denoise(prior, xr, t_next)
                score = schedule.score_from_x0(xr, x0c, torch.full((xr.shape[0],), t_next, dtype=torch.float64))
                _, grad, _, _ = _potential(op, noise, y[item_of_row[rows]], xr, linear_gaussian, None)
                x_new[rows] = xr + delta * (score - a_next * grad) + math.sqrt(2 * delta) * xi_corr[rows]
        if not (bool(torch.isfinite(x_new).all()) and bool(torch.isfinite(d_log_w).all())):
            raise FloatingPointError(
                f"{who}: particles or weights became non-finite at step {k} (t={t:.4g}): the explicit step is unstable; "
                "use more steps, variant='ode' or tempering='linear'"
            )
        x = x_new
        misfits.append((w_prev * misfit.view(B, K)).sum(1))
        log_w = log_w + d_log_w.view(B, K)
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        ess = 1.0 / torch.exp(2 * log_w).sum(1)
        esses.append(ess)
        # Alg. 1: resample (systematic) where ESS / K < threshold, then reset those weights.
        redo = (ess < threshold * K) if k < steps - 1 else torch.zeros(B, dtype=torch.bool, device=device)
        resampled.append(redo)
        if bool(redo.any()):
            idx = _systematic(log_w.exp(), u)
            keep = torch.arange(K, device=device).expand(B, K)
            idx = torch.where(redo[:, None], idx, keep)
            x = x[(torch.arange(B, device=device)[:, None] * K + idx).reshape(-1)]
            log_w = torch.where(redo[:, None], torch.full_like(log_w, -math.log(K)), log_w)
        if callback is not None:
            w = torch.softmax(log_w, dim=1)
            emit(callback, {
                "step": k, "steps": steps, "t": t,
                "x": _weighted_mean(x, w), "x0_hat": _weighted_mean(x0_hat, w_prev), "misfit": misfits[-1],
                "ess": ess, "log_weights": log_w, "particles": x.view(B, K, *op.x_shape),
            })

    w = torch.softmax(log_w, dim=1)
    mean = _weighted_mean(x, w)
    var = _weighted_mean((x.view(B, K, *op.x_shape) - mean[:, None]).pow(2).reshape(N, *op.x_shape), w)
    diagnostics = {
        "nfe": torch.tensor(nfe_per_step * steps),
        "wall_s": torch.tensor(time.perf_counter() - start, dtype=torch.float64),
        "misfit": torch.stack(misfits),
        "ess": torch.stack(esses),
        "resampled": torch.stack(resampled),
        "cg_residual": cg_residual,
    }
    return Reconstruction(x=mean, samples=x.view(B, K, *op.x_shape), log_weights=log_w, std=var.sqrt(),
                          diagnostics=diagnostics)


# ---- pieces ------------------------------------------------------------------------------------------
def _potential(op: Operator, noise: object, y: Tensor, x: Tensor, linear_gaussian: bool,
               probe: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(mu_y(x), grad mu_y(x), lap mu_y(x), ||A x - y||)`` per row; ``lap`` is 0 where it is constant.

    ``probe`` ``(P, N, *x_shape)`` Rademacher vectors for the Hutchinson estimate
    ``lap mu = E[z^T (hess mu) z]`` (Hessian-vector products by double backward), or ``None``.
    """
    zeros = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if linear_gaussian:
        assert isinstance(noise, GaussianNoise) and isinstance(op, LinearOperator)
        residual = op(x) - y
        nll = 0.5 * item_dot(residual, residual) / noise.sigma**2
        # Sec. 2.4: for linear A the Laplacian ||A||_F^2 / sigma^2 is the same for every particle.
        return nll, op.adjoint(noise.grad_nll(residual)), zeros, item_norm(residual)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        pred = op(xg)
        nll = noise.nll(y, pred)  # type: ignore[attr-defined]
        (grad,) = torch.autograd.grad(nll.sum(), xg, create_graph=probe is not None)
        lap = zeros
        if probe is not None:
            total = zeros
            for p in range(probe.shape[0]):
                (hz,) = torch.autograd.grad(grad, xg, grad_outputs=probe[p], retain_graph=p < probe.shape[0] - 1)
                total = total + item_dot(probe[p], hz)
            lap = total / probe.shape[0]
    return nll.detach(), grad.detach(), lap.detach(), item_norm(pred.detach() - y)


def _perturb_and_map(op: LinearOperator, sigma: float, y: Tensor, z_y: Tensor, z_x: Tensor,
                     max_iter: int) -> tuple[Tensor, Tensor]:
    """One exact draw per row from ``N(P^{-1} A^T y / sigma^2, P^{-1})``, ``P = A^T A / sigma^2 + I / rho^2``.

    Perturb-and-MAP: the right-hand side ``A^T (y + sigma z_y) / sigma^2 + z_x / rho`` has covariance
    ``P``, so ``P^{-1} rhs`` has covariance ``P^{-1}`` (exact once CG has converged).
    """
    rhs = op.adjoint(y + sigma * z_y) / sigma**2 + z_x / _RHO
    tol = 1e-10 if rhs.dtype == torch.float64 else 1e-5
    return cg_solve(lambda v: op.normal(v) / sigma**2 + v / _RHO**2, rhs, tol=tol, max_iter=max_iter)


def _systematic(w: Tensor, u: Tensor) -> Tensor:
    """Systematic resampling: indices ``(B, K)`` for weights ``w`` ``(B, K)`` and one uniform ``u`` ``(B,)``."""
    K = w.shape[1]
    cdf = torch.cumsum(w, dim=1)
    positions = (u[:, None] + torch.arange(K, dtype=w.dtype, device=w.device)) / K
    return torch.searchsorted(cdf.contiguous(), positions.contiguous(), right=True).clamp_(max=K - 1)


def _weighted_mean(x: Tensor, w: Tensor) -> Tensor:
    """``sum_k w[b, k] x[b * K + k]`` for ``x`` ``(B * K, *x_shape)`` and ``w`` ``(B, K)``."""
    B, K = w.shape
    xs = x.view(B, K, -1)
    return torch.einsum("bk,bkn->bn", w.to(x.dtype), xs).view(B, *x.shape[1:])


def _check_stability(op: LinearOperator, noise: GaussianNoise, times: Tensor, alphas: Tensor, betas: Tensor,
                     c: float, delta: float, y: Tensor, dtype: torch.dtype, who: str) -> None:
    """Refuse steps for which the explicit likelihood step diverges (``h c beta alpha ||A||^2 / sigma^2 >= 2``)."""
    lip = _opnorm_sq(op, y.device, dtype) / noise.sigma**2  # Lipschitz constant of grad mu_y
    if c > 0:
        h = times[:-1] - times[1:]
        worst = float((h * betas * alphas[:-1]).max()) * lip * c
        if worst >= 2:
            # The ratio scales as 1/steps on the evenly spaced grid.
            needed = math.ceil(len(betas) * worst / 1.9)
            raise ValueError(
                f"{who}: steps={len(betas)} is too few for a stable explicit likelihood step: "
                f"max h*c*beta(t)*alpha(t)*||A||^2/sigma^2 = {worst:.3g} >= 2 (sigma={noise.sigma}, c=likelihood_drift={c}); "
                f"use steps >= {needed}, likelihood_drift=0.5, a larger noise.sigma, or variant='ode'"
            )
    if delta > 0 and delta * lip * float(alphas.max()) >= 2:
        raise ValueError(
            f"{who}: corrector_step={delta} is unstable: corrector_step*||A||^2/sigma^2 = {delta * lip:.3g} >= 2; "
            f"use corrector_step < {2 / lip:.3g}"
        )


def _opnorm_sq(op: LinearOperator, device: torch.device, dtype: torch.dtype, iterations: int = 50) -> float:
    """``||A||_2^2`` by power iteration on ``A^T A`` with a private, fixed-seed generator (no global RNG)."""
    gen = torch.Generator(device=device).manual_seed(0)
    v = torch.randn((1, *op.x_shape), dtype=dtype, device=device, generator=gen)
    v = v / item_norm(v)[0]
    value = 0.0
    for _ in range(iterations):
        z = op.normal(v)
        value = float(item_norm(z)[0])
        if value == 0.0:
            return 0.0
        v = z / value
    return value
