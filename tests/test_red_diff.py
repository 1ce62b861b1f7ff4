"""RED-Diff against closed-form Gaussian answers.

What is exact and what is not (see the ``invdiff.samplers.red_diff`` docstring): for a Gaussian prior
``N(m, C)`` the exact noise predictor gives ``E[eps_hat - eps] = s_t (C + s_t^2 I)^{-1} (mu - m)`` with
``s_t = sigma_t / alpha_t``. So

* one step's gradient is known exactly (checked to 1e-9 against dense-matrix algebra), and
* at a fixed time the expected gradient is that of ``nll + (k/2) (mu - m)^T (C + s^2 I)^{-1} (mu - m)``,
  ``k = lam g(s) s``: with ``weighting="const"`` and ``lam = 1/s`` (``k = 1``) RED-Diff's fixed point is
  the posterior mode under the prior ``N(m, C + s^2 I)``, which ``gaussian_posterior`` gives in closed form
  and which tends to the true posterior mode (= mean) as ``s -> 0``.

Adam only reaches that fixed point up to a stochastic jitter (one ``eps`` draw per step), so the
convergence tests average independent replicate runs (copies of the same measurement in the batch;
items are independent) and state tolerances measured with margin. The paper's default schedule
(descending ``t``, ``linear`` weighting, lam 0.25) is a MAP-*like* estimate with no closed-form target; it
is checked only to improve on its initialisation.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_sampler_common import as_nonlinear, make_problem, single_thread  # noqa: F401  (autouse fixture)
from torch import Tensor

from invdiff.operators import GaussianNoise, PoissonNoise
from invdiff.posterior import gaussian_posterior, operator_matrix
from invdiff.priors.gaussian import GaussianPrior
from invdiff.samplers import red_diff
from invdiff.samplers.red_diff import WEIGHTINGS, _data_gradient, _gradient, weight

OPERATORS = ("mask", "blur", "singlecoil", "multicoil")


def _rms(err: Tensor, scale: Tensor) -> Tensor:
    """Per-item rms of ``err / scale`` over pixels, shape (B,)."""
    return (err / scale).pow(2).flatten(1).mean(1).sqrt()


def _real_rows(y: Tensor) -> Tensor:
    flat = y.reshape(y.shape[0], -1)
    return torch.cat([flat.real, flat.imag], 1) if flat.is_complex() else flat


# ---- one step, exactly ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize(("t", "weighting"), [(5.0, "linear"), (400.0, "sqrt"), (999.0, "log"), (120.0, "const")])
def test_gradient_matches_dense_closed_form(name: str, t: float, weighting: str) -> None:
    p = make_problem(name, sigma=0.2)
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(p.post_mean.shape, generator=g, dtype=torch.float64)
    eps = torch.randn(mu.shape, generator=g, dtype=torch.float64)
    lam, obs_weight = 0.7, 1.3
    grad, x0_hat, misfit = _gradient(p.prior, p.op, p.noise, p.y, mu, t, eps, lam=lam, weighting=weighting,
                                     obs_weight=obs_weight, batch_size=1)

    # Oracle from dense matrices only (no operator or prior methods): A as a real matrix, C dense.
    a = operator_matrix(p.op)
    cov = p.prior.covariance_matrix()
    m = p.prior.mean.reshape(-1)
    ab = float(p.prior.schedule.alpha_bar(torch.tensor(t)))
    s = math.sqrt((1 - ab) / ab)
    flat_mu, flat_eps = mu.flatten(1), eps.flatten(1)
    x_t = math.sqrt(ab) * flat_mu + math.sqrt(1 - ab) * flat_eps
    v = ab * cov + (1 - ab) * torch.eye(cov.shape[0], dtype=torch.float64)
    x0 = m + math.sqrt(ab) * torch.linalg.solve(v, (x_t - math.sqrt(ab) * m).T).T @ cov
    eps_hat = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    g_of_s = {"linear": s, "sqrt": math.sqrt(s), "log": math.log1p(s), "const": 1.0}[weighting]
    residual = flat_mu @ a.T - _real_rows(p.y)
    expected = obs_weight * residual @ a / p.noise.sigma**2 + lam * g_of_s * (eps_hat - flat_eps)

    torch.testing.assert_close(x0_hat.flatten(1), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad.flatten(1), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(misfit, residual.norm(dim=1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t", [10.0, 300.0, 900.0])
def test_mean_regulariser_is_the_smoothed_prior_score(t: float) -> None:
    """``E[eps_hat - eps] = s (C + s^2 I)^{-1} (mu - m)``; for a Gaussian the step is affine in eps, so eps = 0 gives the mean."""
    p = make_problem("zero")
    mu = torch.randn(p.post_mean.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grad, _, _ = _gradient(p.prior, p.op, p.noise, p.y, mu, t, torch.zeros_like(mu), lam=1.0, weighting="const",
                           obs_weight=1.0, batch_size=64)
    s = float(p.prior.schedule.sigma(torch.tensor(t)))
    cov = p.prior.covariance_matrix()
    smoothed = cov + s * s * torch.eye(cov.shape[0], dtype=torch.float64)
    expected = s * torch.linalg.solve(smoothed, (mu.flatten(1) - p.prior.mean.reshape(-1)).T).T
    torch.testing.assert_close(grad.flatten(1), expected, rtol=1e-9, atol=1e-10)


def test_weightings_follow_the_table() -> None:
    s, lam = 2.5, 0.3
    table = {"linear": s, "sqrt": s**0.5, "square": s * s, "log": math.log(1 + s), "trunc_linear": 1.0,
             "power2over3": s ** (2 / 3), "const": 1.0}
    assert set(table) == set(WEIGHTINGS)
    for name, g in table.items():
        assert weight(name, s, lam) == pytest.approx(lam * g, rel=1e-12)
    assert weight("trunc_linear", 0.4, 1.0) == pytest.approx(0.4)


def test_nonlinear_path_equals_linear_path() -> None:
    """The autograd data gradient (plain ``Operator``) equals the exact-adjoint one, so whole runs agree."""
    p = make_problem("blur", sigma=0.2)
    init = p.op.adjoint(p.y)
    a = red_diff(p.prior, p.op, p.y, noise=p.noise, steps=20, init=init, generator=torch.Generator().manual_seed(3))
    b = red_diff(p.prior, as_nonlinear(p.op), p.y, noise=p.noise, steps=20, init=init,
                 generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.x, b.x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(a.diagnostics["misfit"], b.diagnostics["misfit"], rtol=1e-9, atol=1e-9)


def test_poisson_data_gradient_is_exact() -> None:
    """Other noise models go through autograd of ``nll``: d/dx sum(g A x - g y log(g A x)) = g A^T (1 - y / (A x))."""
    p = make_problem("blur")
    gain = 3.0
    x = 1.0 + 0.1 * torch.rand(p.post_mean.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = p.op(x) * 1.2
    grad, misfit = _data_gradient(p.op, PoissonNoise(gain), y, x)
    expected = gain * p.op.adjoint(1 - y / p.op(x))
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(misfit, (p.op(x) - y).flatten(1).norm(dim=1))


# ---- convergence ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "t0"), [("mask", 30.0), ("singlecoil", 60.0), ("blur", 60.0)])
def test_fixed_time_run_converges_to_the_smoothed_posterior_mode(name: str, t0: float) -> None:
    """With ``t`` held at ``t0``, ``weighting="const"`` and ``lam = 1/s``, the fixed point is the posterior mode
    for the prior ``N(m, C + s^2 I)`` (closed form). Tolerance: 0.12 posterior standard deviations (rms over
    pixels) for the mean of 8 replicate runs, max 0.3. Measured: 0.02-0.06 rms (max 0.12); for scale, changing
    ``lam`` by a factor 2 moves the fixed point by 0.13-0.22 rms. The smoothed mode itself is within
    0.005-0.08 rms of the true posterior mean (s = 0.11 at t = 30, 0.21 at t = 60)."""
    p = make_problem(name, sigma=0.5 if name != "blur" else 0.3)
    s = float(p.prior.schedule.sigma(torch.tensor(t0)))
    cov = p.prior.covariance_matrix()
    smoothed = GaussianPrior.full(p.prior.mean, cov + s * s * torch.eye(cov.shape[0], dtype=torch.float64), p.prior.schedule)
    mode, _ = gaussian_posterior(smoothed, p.op, p.y, p.noise)
    replicates = 8
    out = red_diff(p.prior, p.op, p.y.repeat_interleave(replicates, 0), noise=p.noise, steps=2000, lam=1 / s,
                   weighting="const", lr=0.02, lr_schedule="cosine", t_range=(t0, t0), init="tikhonov",
                   generator=torch.Generator().manual_seed(1))
    average = out.x.view(p.y.shape[0], replicates, *p.op.x_shape).mean(1)
    sd = p.post_var.sqrt()
    assert bool((_rms(average - mode, sd) < 0.12).all()), _rms(average - mode, sd)
    assert float(((average - mode) / sd).abs().max()) < 0.3
    # ... and therefore near the true posterior mode (= mean): the smoothing shift plus the tolerance.
    assert bool((_rms(average - p.post_mean, sd) < _rms(mode - p.post_mean, sd) + 0.12).all())


@pytest.mark.parametrize("name", ["mask", "singlecoil"])
def test_paper_defaults_improve_on_the_initialisation(name: str) -> None:
    """Paper defaults (descending t, linear weighting, lam 0.25, lr 0.1): a MAP-like estimate with no closed-form
    target (the regulariser fades as t -> 0, and with the true likelihood lam = 0.25 is a weak prior). Required,
    averaged over 4 measurements: at most 0.75x the pseudo-inverse's error in posterior standard deviations
    (measured at sigma = 0.1, 200 steps: mask 0.21x, single-coil MRI 0.68x; per item 0.4-1.1x for MRI)."""
    p = make_problem(name, sigma=0.1, batch=4)
    out = red_diff(p.prior, p.op, p.y, noise=p.noise, steps=200, generator=torch.Generator().manual_seed(0))
    sd = p.post_var.sqrt()
    err, err_init = _rms(out.x - p.post_mean, sd), _rms(p.op.pinv(p.y) - p.post_mean, sd)
    assert float(err.mean()) < 0.75 * float(err_init.mean()), (err, err_init)


@pytest.mark.parametrize("name", ["zero", "zero_mri"])
def test_uninformative_measurement_gives_the_prior_mean(name: str) -> None:
    """A = 0: the data term vanishes and the fixed point is ``m`` at every t, for every weighting. Tolerance:
    0.15 prior standard deviations rms for the mean of 8 replicates (measured 0.03-0.07), from zeros."""
    p = make_problem(name, batch=1)
    replicates = 8
    out = red_diff(p.prior, p.op, p.y.repeat_interleave(replicates, 0), noise=p.noise, steps=500,
                   lr_schedule="cosine", generator=torch.Generator().manual_seed(5))
    average = out.x.mean(0, keepdim=True)
    prior_sd = p.prior.marginal_variance().sqrt()
    err = _rms(average - p.prior.mean, prior_sd)
    assert float(err) < 0.15, err
    assert float(_rms(torch.zeros_like(average) - p.prior.mean, prior_sd)) > 0.3  # the start was far


def test_init_options() -> None:
    p = make_problem("mask")
    zeros = red_diff(p.prior, p.op, p.y, noise=p.noise, steps=1, lr=1e-9, init="zeros")
    torch.testing.assert_close(zeros.x, torch.zeros_like(zeros.x), atol=1e-8, rtol=0)
    pinv = red_diff(p.prior, p.op, p.y, noise=p.noise, steps=1, lr=1e-9)
    torch.testing.assert_close(pinv.x, p.op.pinv(p.y), atol=1e-8, rtol=0)
    tik = red_diff(p.prior, p.op, p.y, noise=p.noise, steps=1, lr=1e-9, init="tikhonov")
    torch.testing.assert_close(tik.x, p.op.adjoint(p.y) / (1 + p.noise.sigma**2), atol=1e-8, rtol=0)  # mask: (1/s2 + 1)^-1 A^T y/s2
    nonlinear = red_diff(p.prior, as_nonlinear(p.op), p.y, noise=p.noise, steps=1, lr=1e-9)
    torch.testing.assert_close(nonlinear.x, torch.zeros_like(nonlinear.x), atol=1e-8, rtol=0)


# ---- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "error", "message"), [
    ({"lam": -1.0}, ValueError, r"lam must be a finite number in \[0.0, inf\], got -1.0"),
    ({"lr": 0.0}, ValueError, r"lr must be a finite number in \(0.0, inf\], got 0.0"),
    ({"obs_weight": math.nan}, ValueError, "obs_weight must be a finite number"),
    ({"weighting": "cubic"}, ValueError, "weighting must be one of 'linear', .* got 'cubic'"),
    ({"lr_schedule": "step"}, ValueError, "lr_schedule must be one of 'constant', 'cosine', got 'step'"),
    ({"t_range": (999.0, -1.0)}, ValueError, r"t_range\[1\] must be a finite number in \[0.0, 999\], got -1.0"),
    ({"t_range": 5}, ValueError, r"t_range must be a pair \(t_first, t_last\), got 5"),
    ({"init": "random"}, ValueError, "init must be one of 'pinv', 'tikhonov', 'adjoint', 'zeros', got 'random'"),
    ({"init": torch.zeros(2, 1, 5, 6, dtype=torch.float64)}, ValueError, r"init must have shape \(2, 1, 6, 6\)"),
    ({"init": torch.full((2, 1, 6, 6), math.nan)}, ValueError, "init contains NaN or inf"),
    ({"init": torch.zeros(2, 1, 6, 6, dtype=torch.complex128)}, TypeError, "init must be a real floating tensor"),
])
def test_bad_options_raise(options: dict[str, object], error: type[Exception], message: str) -> None:
    p = make_problem("mask")
    with pytest.raises(error, match=message):
        red_diff(p.prior, p.op, p.y, noise=p.noise, steps=2, **options)


def test_linear_inits_need_a_linear_operator_and_gaussian_noise() -> None:
    p = make_problem("mask")
    with pytest.raises(ValueError, match="init='pinv' needs a LinearOperator; DenseOperator is not linear"):
        red_diff(p.prior, as_nonlinear(p.op), p.y, noise=p.noise, steps=2, init="pinv")
    with pytest.raises(ValueError, match="init='tikhonov' needs GaussianNoise, got PoissonNoise"):
        red_diff(p.prior, p.op, p.y.abs(), noise=PoissonNoise(1.0), steps=2, init="tikhonov")


def test_float32_inputs_give_float32_output() -> None:
    p = make_problem("singlecoil")
    y = p.y.to(torch.complex64)
    prior32 = GaussianPrior.full(p.prior.mean.float(), p.prior.covariance_matrix().float(), p.prior.schedule)
    out = red_diff(prior32, p.op.float(), y, noise=GaussianNoise(0.3), steps=3, generator=torch.Generator().manual_seed(0))
    assert out.x.dtype == torch.float32
