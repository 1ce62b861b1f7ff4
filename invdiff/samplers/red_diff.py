"""RED-Diff: variational posterior mode-seeking with a diffusion prior (Mardani et al. 2023).

The variational posterior is a point ``q(x0 | y) = delta(x0 - mu)``. Each step draws one time ``t`` (on a
descending schedule) and one ``eps ~ N(0, I)`` and takes an Adam step on ``mu`` along

    grad = obs_weight * grad_mu nll(y, A(mu))  +  w_t * (eps_hat - eps),
    x_t = sqrt(ab_t) mu + sqrt(1 - ab_t) eps,      eps_hat = eps_theta(x_t, t)   (no graph through the network)

which is the gradient of ``obs_weight * nll + w_t * <sg[eps_hat - eps], mu>`` (arXiv 2305.04391, Eq. 9).

Normalisation (the choice invdiff makes). The data term is the *true* negative log-likelihood, summed per
measurement: ``||A(mu) - y||^2 / (2 sigma^2)`` for ``GaussianNoise(sigma)``, and the regulariser is summed
over pixels. The official code instead averages both terms and leaves ``sigma`` out, so its ``lam`` weighs
the prior against ``(1/m) ||A mu - y||^2 / 2``: set ``obs_weight = sigma^2 * n / m`` (``n`` pixels, ``m``
measurement entries) to reproduce it. With the true likelihood the Gaussian analysis below is exact and the
prior weight ``lam`` has a fixed meaning whatever the noise level.

What the estimate is (exact for a Gaussian prior ``N(m, C)``, and the reason the closed-form tests are set
up as they are). With ``s_t = sigma_t / alpha_t = sqrt((1 - ab_t) / ab_t)`` the exact noise predictor gives

    E_eps[eps_hat - eps] = s_t (C + s_t^2 I)^{-1} (mu - m) = -s_t grad log p_{s_t}(mu),

the score of the prior smoothed by ``N(0, s_t^2 I)``. So at a fixed ``t`` RED-Diff's expected gradient is
that of ``nll + (k_t / 2) (mu - m)^T (C + s_t^2 I)^{-1} (mu - m)`` with ``k_t = w_t s_t``: its fixed point
is the posterior *mode* under the prior ``N(m, (C + s_t^2 I) / k_t)``. That equals the true posterior mode
only when ``k_t = 1`` and ``s_t -> 0``; none of the paper's weightings has ``k_t -> 1`` as ``t -> 0``
(``linear``: ``k_t = lam s_t^2 -> 0``, so the prior fades at the end of the descending schedule). RED-Diff
is therefore a MAP-*like* point estimate (Qiu et al., "Beyond Accuracy", Table 1), not a posterior sampler.

References:
    Mardani, Song, Kautz, Vahdat, "A Variational Perspective on Solving Inverse Problems with Diffusion
    Models", ICLR 2024 (arXiv 2305.04391): Eq. 9 (loss), Sec. 4.3 (SNR weighting), Alg. 1.
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
    item_norm,
    progress_steps,
)

__all__ = ["red_diff"]

Weighting = Literal["linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const"]
WEIGHTINGS: tuple[str, ...] = ("linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const")


def red_diff(
    prior: Prior,
    op: Operator,
    y: Tensor,
    *,
    noise: GaussianNoise | PoissonNoise | RicianNoise,
    steps: int = 50,
    lam: float = 0.25,
    lr: float = 0.1,
    weighting: Weighting = "linear",
    init: Tensor | Literal["pinv", "tikhonov", "adjoint", "zeros"] | None = None,
    obs_weight: float = 1.0,
    lr_schedule: Literal["constant", "cosine"] = "constant",
    t_range: tuple[float, float] | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Reconstruction:
    """RED-Diff (Mardani et al. 2023): Adam on a point estimate ``mu`` with a denoising-score regulariser.

    Maths: ``mu <- Adam(mu, obs_weight * grad nll(y, A mu) + lam * g(s_t) * (eps_theta(x_t, t) - eps))``,
    ``x_t = sqrt(ab_t) mu + sqrt(1 - ab_t) eps``, ``s_t = sigma_t / alpha_t``, ``t`` descending.

    Args:
        prior: the diffusion prior (``denoise(x_t, t)``), over real images of shape ``x_shape``.
        op: forward operator with ``op.x_shape == prior.x_shape``. Linear operators use their exact
            adjoint for the data gradient; others use autograd.
        y: ``(B, *op.y_shape)`` measurements (complex for k-space), finite.
        noise: the measurement noise; the data term is ``noise.nll`` (true negative log-likelihood,
            summed). ``GaussianNoise`` needs ``sigma > 0``; any noise model with ``nll`` works via autograd.
        steps: number of Adam steps = number of times visited (official default 50; 200-1000 are common).
        lam: regulariser weight ``lambda`` (official default 0.25). With the true likelihood as data term the
            official value weighs the prior ``m / (n sigma^2)`` times less than in the official (averaged,
            sigma-free) loss, i.e. weakly; on the closed-form Gaussian problems of the tests ``lam`` ~ 4 with
            ``lr_schedule="cosine"`` came closest to the posterior mean. See the module docstring.
        lr: Adam learning rate (official default 0.1); betas are (0.9, 0.99) as in the official code.
        weighting: ``g(s)`` in ``w_t = lam * g(s_t)``: ``linear`` s (default), ``sqrt`` s^(1/2),
            ``square`` s^2, ``log`` log(1 + s), ``trunc_linear`` min(s, 1), ``power2over3`` s^(2/3), ``const`` 1.
        init: starting point: a ``(B, *x_shape)`` real tensor, ``"pinv"`` (``op.pinv(y)``),
            ``"tikhonov"`` (``(A^T A / sigma^2 + I)^{-1} A^T y / sigma^2``, the MAP under ``N(0, I)``, by
            conjugate gradients; unlike ``pinv`` it does not amplify noise where ``A`` has tiny singular
            values, e.g. blur), ``"adjoint"`` (``op.adjoint(y)``) or ``"zeros"``; ``None`` means ``"pinv"``
            for linear operators (official) and ``"zeros"`` otherwise.
        obs_weight: multiplies the data term (``v`` in the official code).
        lr_schedule: ``"constant"`` (official) or ``"cosine"`` (``lr`` annealed to 0 over the steps, which
            damps the step-to-step jitter of the final iterate that comes from the ``(t, eps)`` draws).
        t_range: ``(t_first, t_last)`` times of the first and last step, in ``[0, T-1]``; the ``steps``
            times are evenly spaced between them and rounded to integers. Default ``(T-1, 0)``.
            ``(t0, t0)`` holds the time fixed (an analysis setting: the fixed point is then known in closed
            form for a Gaussian prior, see the module docstring).
        batch_size: the prior is evaluated on at most this many items at a time.
        generator: the only source of randomness (on ``y``'s device).
        callback: called after each step with keys ``step, steps, t, x, x0_hat, misfit`` (``x`` is the
            updated ``mu``, ``x0_hat`` the denoiser output of the step, ``misfit`` ``||A(mu) - y||`` of
            the ``mu`` the step started from, per item).
        progress: show a progress bar on stderr.

    Returns:
        ``Reconstruction`` with ``x = mu`` (``(B, *x_shape)``), no samples, and diagnostics ``nfe``
        (= steps), ``wall_s`` and ``misfit`` ``(steps, B)``.

    Raises:
        TypeError: wrong argument types (see ``check_problem``), a non-tensor/complex ``init``.
        ValueError: bad hyperparameters, measurement shape, non-finite ``y`` or ``init``, ``init`` of the
            wrong shape, ``"pinv"``/``"adjoint"`` with a non-linear operator.

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> from invdiff.priors.gaussian import GaussianPrior
        >>> from invdiff.operators import GaussianNoise
        >>> from invdiff.operators.blur import Blur, gaussian_kernel
        >>> prior = GaussianPrior.diagonal(torch.zeros(1, 8, 8), 1.0, VPSchedule())
        >>> op = Blur(gaussian_kernel(1.0), (1, 8, 8))
        >>> y = torch.zeros(2, 1, 8, 8)
        >>> out = red_diff(prior, op, y, noise=GaussianNoise(0.1), steps=5, generator=torch.Generator().manual_seed(0))
        >>> out.x.shape, out.diagnostics["misfit"].shape
        (torch.Size([2, 1, 8, 8]), torch.Size([5, 2]))
    """
    who = "red_diff"
    start = time.perf_counter()
    dtype = check_problem(prior, op, y, who)
    _check_noise(noise, who)
    check_int("steps", steps, who)
    lam = check_float("lam", lam, who)
    lr = check_float("lr", lr, who, low_open=True)
    check_choice("weighting", weighting, WEIGHTINGS, who)
    obs_weight = check_float("obs_weight", obs_weight, who)
    check_choice("lr_schedule", lr_schedule, ("constant", "cosine"), who)
    check_int("batch_size", batch_size, who)
    check_generator(generator, y.device, who)
    schedule = prior.schedule
    times = _times(schedule.T, steps, t_range, who)
    mu = _initial(op, noise, y, init, dtype, who)

    mu = mu.detach().clone().requires_grad_(True)
    # Alg. 1: Adam with betas (0.9, 0.99) (the official code notes the paper used 0.999), no weight decay.
    optimiser = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
    misfits = []
    for i in progress_steps(steps, progress, who):
        t = float(times[i])
        if lr_schedule == "cosine":
            optimiser.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
        # Alg. 1, line 3: one eps per step for every item, drawn before chunking.
        eps = torch.randn(mu.shape, dtype=dtype, device=y.device, generator=generator)
        grad, x0_hat, misfit = _gradient(prior, op, noise, y, mu.detach(), t, eps, lam=lam, weighting=weighting,
                                         obs_weight=obs_weight, batch_size=batch_size)
        mu.grad = grad
        optimiser.step()
        misfits.append(misfit)
        # A copy: Adam updates mu in place, and a callback may keep what it is given.
        emit(callback, {"step": i, "steps": steps, "t": t, "x": mu.detach().clone(), "x0_hat": x0_hat, "misfit": misfit})

    diagnostics = {
        "nfe": torch.tensor(steps),
        "wall_s": torch.tensor(time.perf_counter() - start, dtype=torch.float64),
        "misfit": torch.stack(misfits),
    }
    return Reconstruction(x=mu.detach(), diagnostics=diagnostics)


def weight(weighting: str, s: float, lam: float) -> float:
    """``w_t = lam * g(s_t)`` for the SNR weighting ``weighting`` and ``s_t = sigma_t / alpha_t``."""
    g = {
        "linear": s,
        "sqrt": math.sqrt(s),
        "square": s * s,
        "log": math.log1p(s),
        "trunc_linear": min(s, 1.0),
        "power2over3": s ** (2.0 / 3.0),
        "const": 1.0,
    }[weighting]
    return lam * g


def _gradient(
    prior: Prior, op: Operator, noise: object, y: Tensor, mu: Tensor, t: float, eps: Tensor, *,
    lam: float, weighting: str, obs_weight: float, batch_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradient Adam sees at one step, with the noise ``eps`` given.

    Returns:
        ``(grad, x0_hat, misfit)``: ``grad`` and ``x0_hat`` of shape ``(B, *x_shape)``, ``misfit``
        ``||A(mu) - y||`` of shape ``(B,)``.
    """
    schedule = prior.schedule
    tt = torch.tensor([t], dtype=torch.float64)
    ab = float(schedule.alpha_bar(tt))
    w_t = weight(weighting, math.sqrt((1 - ab) / ab), lam)
    x_t = math.sqrt(ab) * mu + math.sqrt(1 - ab) * eps
    x0_hat = torch.empty_like(mu)
    for rows in chunks(mu.shape[0], batch_size):
        x0_hat[rows] = denoise(prior, x_t[rows], t)
    eps_hat = (x_t - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
    data_grad, misfit = _data_gradient(op, noise, y, mu)
    # Eq. 9: the regulariser's gradient is the denoiser residual, with no backprop through the network.
    return obs_weight * data_grad + w_t * (eps_hat - eps), x0_hat, misfit


def _data_gradient(op: Operator, noise: object, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``grad_x nll(y, A x)`` per item and the misfit ``||A x - y||`` (B,)."""
    if isinstance(noise, GaussianNoise) and isinstance(op, LinearOperator):
        residual = op(x) - y
        # d/dx ||A x - y||^2 / (2 sigma^2) = A^H (A x - y) / sigma^2, with the exact adjoint.
        return op.adjoint(noise.grad_nll(residual)), item_norm(residual)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        pred = op(xg)
        # Items are independent, so the gradient of the sum is the per-item gradient.
        (grad,) = torch.autograd.grad(noise.nll(y, pred).sum(), xg)  # type: ignore[attr-defined]
    return grad, item_norm(pred.detach() - y)


def _check_noise(noise: object, who: str) -> None:
    if isinstance(noise, GaussianNoise):
        if not noise.sigma > 0:
            raise ValueError(f"{who}: noise.sigma must be > 0 (the likelihood of sigma=0 is degenerate), got {noise.sigma!r}")
        return
    if not callable(getattr(noise, "nll", None)):
        raise TypeError(f"{who}: noise must be a noise model with an nll(y, y_pred) method (e.g. GaussianNoise), got {type(noise).__name__}")


def _times(T: int, steps: int, t_range: tuple[float, float] | None, who: str) -> Tensor:
    if t_range is None:
        first, last = float(T - 1), 0.0
    else:
        if not isinstance(t_range, (tuple, list)) or len(t_range) != 2:
            raise ValueError(f"{who}: t_range must be a pair (t_first, t_last), got {t_range!r}")
        first = check_float("t_range[0]", t_range[0], who, high=T - 1)
        last = check_float("t_range[1]", t_range[1], who, high=T - 1)
    return torch.linspace(first, last, steps, dtype=torch.float64).round()


def _initial(op: Operator, noise: object, y: Tensor, init: object, dtype: torch.dtype, who: str) -> Tensor:
    batch = (y.shape[0], *op.x_shape)
    if isinstance(init, Tensor):
        if init.is_complex() or not init.is_floating_point():
            raise TypeError(f"{who}: init must be a real floating tensor, got dtype {init.dtype}")
        if tuple(init.shape) != batch:
            raise ValueError(f"{who}: init must have shape {batch} (B, *x_shape), got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError(f"{who}: init contains NaN or inf")
        return init.to(device=y.device, dtype=dtype)
    if init is None:
        init = "pinv" if isinstance(op, LinearOperator) else "zeros"
    check_choice("init", init, ("pinv", "tikhonov", "adjoint", "zeros"), who)
    if init == "zeros":
        return torch.zeros(batch, dtype=dtype, device=y.device)
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{who}: init={init!r} needs a LinearOperator; {type(op).__name__} is not linear (use 'zeros' or a tensor)")
    if init == "pinv":
        return op.pinv(y).to(dtype)
    if init == "adjoint":
        return op.adjoint(y).to(dtype)
    if not isinstance(noise, GaussianNoise):
        raise ValueError(f"{who}: init='tikhonov' needs GaussianNoise, got {type(noise).__name__}")
    s2 = noise.sigma**2
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    x, _ = cg_solve(lambda v: op.normal(v) / s2 + v, op.adjoint(y).to(dtype) / s2, tol=tol, max_iter=1000)
    return x
