"""The analytic Gaussian prior: exact denoiser (Tweedie), Monte Carlo checks, representations, errors.

Oracles are written independently of ``invdiff/priors/gaussian.py`` with NumPy/SciPy dense linear
algebra: the marginal ``p_t = N(sqrt(ab) mu, ab C + (1 - ab) I)``, its score, and Tweedie's formula
``E[x0 | x_t] = (x_t + (1 - ab) grad log p_t(x_t)) / sqrt(ab)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from invdiff.priors.base import Prior, eps, score
from invdiff.priors.gaussian import GaussianPrior
from invdiff.schedule import VPSchedule

X_SHAPE = (1, 2, 3)
N = math.prod(X_SHAPE)
Z_MAX = 5.0  # |z| threshold for Monte Carlo checks; see test_denoiser_monte_carlo_orthogonality


# ---- fixtures and independent references ----------------------------------------------------------
def random_spd(n: int, seed: int, *, floor: float = 0.05) -> np.ndarray:
    """A non-diagonal SPD matrix with entries of order 1 (random Gram matrix plus a floor)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    return a @ a.T / n + floor * np.eye(n)


def low_rank_parts(n: int, r: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, r)) * 0.7, rng.uniform(0.05, 0.5, n)


def mean_np(seed: int = 7, shape: tuple[int, ...] = X_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * 0.5


def np_denoise_tweedie(mu: np.ndarray, cov: np.ndarray, ab: float, x_t: np.ndarray) -> np.ndarray:
    """Tweedie's formula with the closed-form marginal score, rows of ``x_t`` flattened, float64."""
    n = cov.shape[0]
    cov_t = ab * cov + (1 - ab) * np.eye(n)
    s = -np.linalg.solve(cov_t, (x_t - math.sqrt(ab) * mu.ravel()).T).T
    return (x_t + (1 - ab) * s) / math.sqrt(ab)


def build(kind: str, schedule: VPSchedule, *, dtype: torch.dtype = torch.float64, shape=X_SHAPE, seed: int = 0):
    """A prior of the given representation and the dense (mu, C) it stands for."""
    n = math.prod(shape)
    mu = mean_np(seed + 7, shape)
    if kind == "full":
        cov = random_spd(n, seed)
        prior = GaussianPrior.full(torch.tensor(mu, dtype=dtype), torch.tensor(cov, dtype=dtype), schedule)
    elif kind == "diagonal":
        var = np.random.default_rng(seed).uniform(0.1, 2.0, shape)
        cov = np.diag(var.ravel())
        prior = GaussianPrior.diagonal(torch.tensor(mu, dtype=dtype), torch.tensor(var, dtype=dtype), schedule)
    else:
        f, d = low_rank_parts(n, 2, seed)
        cov = f @ f.T + np.diag(d)
        prior = GaussianPrior.low_rank(torch.tensor(mu, dtype=dtype), torch.tensor(f, dtype=dtype),
                                       torch.tensor(d, dtype=dtype), schedule)
    return prior, mu, cov


KINDS = ["full", "diagonal", "low_rank"]


# ---- the denoiser against Tweedie's formula (deterministic) -------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", ["linear", "cosine"])
def test_denoise_equals_tweedie_closed_form(kind: str, sched: str) -> None:
    schedule = VPSchedule(sched)
    prior, mu, cov = build(kind, schedule)
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.0, 1.0, 37.5, 400.0, 871.25, 999.0], dtype=torch.float64)
    x_t = torch.randn(t.shape[0], *X_SHAPE, generator=g, dtype=torch.float64) * 1.3
    out = prior.denoise(x_t, t)
    assert out.shape == x_t.shape and out.dtype == torch.float64
    for i in range(t.shape[0]):
        ab = float(schedule.alpha_bar(t[i]))
        ref = np_denoise_tweedie(mu, cov, ab, x_t[i].reshape(1, -1).numpy())
        # Tweedie divides by sqrt(ab) ~ 5e-5 at the last cosine step: allow eps * |x| / sqrt(ab).
        np.testing.assert_allclose(out[i].reshape(1, -1).numpy(), ref, rtol=0, atol=1e-9 / math.sqrt(ab))


@pytest.mark.parametrize("kind", KINDS)
def test_denoise_float32_follows_input_dtype(kind: str) -> None:
    schedule = VPSchedule()
    p64, _, _ = build(kind, schedule)
    p32, _, _ = build(kind, schedule, dtype=torch.float32)
    x_t = torch.randn(4, *X_SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 10.0, 500.0, 999.0])
    out32 = p32.denoise(x_t, t)
    assert out32.dtype == torch.float32
    assert p32.sample(2, torch.Generator().manual_seed(0)).dtype == torch.float32
    torch.testing.assert_close(out32.double(), p64.denoise(x_t.double(), t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_denoise_batched_and_scalar_t(kind: str) -> None:
    prior, _, _ = build(kind, VPSchedule())
    x_t = torch.randn(3, *X_SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.tensor([5.0, 250.0, 990.0])
    batched = prior.denoise(x_t, t)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], prior.denoise(x_t[i : i + 1], t[i : i + 1]), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(prior.denoise(x_t, 250.0), prior.denoise(x_t, torch.full((3,), 250.0)))


@pytest.mark.parametrize("kind", KINDS)
def test_denoise_is_differentiable_with_the_right_jacobian(kind: str) -> None:
    schedule = VPSchedule()
    prior, _, cov = build(kind, schedule)
    t = torch.tensor([300.0])
    ab = float(schedule.alpha_bar(t))
    x_t = torch.randn(1, *X_SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: prior.denoise(x, t), x_t).reshape(N, N)
    expected = math.sqrt(ab) * cov @ np.linalg.inv(ab * cov + (1 - ab) * np.eye(N))
    np.testing.assert_allclose(jac.numpy(), expected, rtol=0, atol=1e-10)


def test_denoise_limits() -> None:
    schedule = VPSchedule("cosine")
    prior, mu, _ = build("full", schedule)
    x_t = torch.randn(2, *X_SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # pure noise: the denoiser returns (almost) the prior mean; gain ~ sqrt(ab) * ||C|| ~ 1e-4
    far = prior.denoise(x_t, torch.full((2,), 999.0))
    torch.testing.assert_close(far, torch.tensor(mu).expand(2, *X_SHAPE), rtol=0, atol=1e-3)
    # a point-mass prior (C = 0) returns its mean at every t
    point = GaussianPrior.full(torch.tensor(mu), torch.zeros(N, N, dtype=torch.float64), schedule)
    torch.testing.assert_close(point.denoise(x_t, torch.tensor([0.0, 500.0])), torch.tensor(mu).expand(2, *X_SHAPE))
    torch.testing.assert_close(point.sample(3, torch.Generator().manual_seed(0)), torch.tensor(mu).expand(3, *X_SHAPE))


# ---- Monte Carlo: the residual x0 - D(x_t) is orthogonal to every affine function of x_t ------------------
def _orthogonality_z(x0: np.ndarray, x_t: np.ndarray, d: np.ndarray, p_diag: np.ndarray) -> np.ndarray:
    """z-scores of the sample moments E[R_i] and E[R_i x_t,j], R = x0 - D(x_t).

    For the exact conditional mean, R is Gaussian, has mean 0 and is uncorrelated with (hence, jointly
    Gaussian, independent of) x_t. So R_i x_t,j has mean 0 and variance E[R_i^2] E[x_t,j^2] = P_ii M_jj,
    with P the posterior covariance and M_jj the second moment of x_t,j; the sample mean of N draws has
    standard deviation sqrt(P_ii M_jj / N) and the z-score is approximately standard normal (CLT).
    """
    n_samples = x0.shape[0]
    r = x0 - d
    m2 = (x_t**2).mean(0)  # plug-in M_jj (relative error ~ sqrt(2/N), negligible against Z_MAX)
    z_mean = r.mean(0) / np.sqrt(p_diag / n_samples)
    z_cross = (r.T @ x_t / n_samples) / np.sqrt(np.outer(p_diag, m2) / n_samples)
    return np.concatenate([z_mean.ravel(), z_cross.ravel()])


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_monte_carlo_orthogonality(kind: str) -> None:
    """Tweedie checked by simulation: x0 drawn from N(mu, C) with NumPy (not prior.sample), noised, denoised.

    ``E[x0 | x_t]`` is characterised (for jointly Gaussian variables) by E[R] = 0 and E[R x_t^T] = 0.
    With n = 6 there are 6 + 36 = 42 z-scores; with |z| <= 5 the chance of a false failure is below
    42 * 5.7e-7 = 2.4e-5 (and the seed is fixed). The same statistic for a wrong denoiser (x_t / sqrt(ab),
    i.e. no prior) is far above the threshold, so the check has power.
    """
    schedule = VPSchedule()
    prior, mu, cov = build(kind, schedule)
    n_samples = 20_000
    rng = np.random.default_rng(11)
    x0 = mu.ravel() + rng.standard_normal((n_samples, N)) @ np.linalg.cholesky(cov).T
    for t_val in (60.0, 300.5, 800.0):
        ab = float(schedule.alpha_bar(t_val))
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * rng.standard_normal((n_samples, N))
        d = prior.denoise(torch.tensor(x_t).reshape(n_samples, *X_SHAPE), torch.full((n_samples,), t_val))
        d = d.reshape(n_samples, N).numpy()
        post = cov - ab * cov @ np.linalg.solve(ab * cov + (1 - ab) * np.eye(N), cov)
        z = _orthogonality_z(x0, x_t, d, np.diag(post))
        assert np.abs(z).max() < Z_MAX, f"t={t_val}: max |z| = {np.abs(z).max():.2f}"
        # residual covariance equals the posterior covariance: Var(S_ij) = (P_ii P_jj + P_ij^2) / N
        r = x0 - d
        s = r.T @ r / n_samples
        z_cov = (s - post) / np.sqrt((np.outer(np.diag(post), np.diag(post)) + post**2) / n_samples)
        assert np.abs(z_cov).max() < Z_MAX
        # power: a wrong denoiser is rejected by the same test
        naive = x_t / math.sqrt(ab)
        p_naive = np.diag((r - (naive - d)).T @ (r - (naive - d)) / n_samples)
        assert np.abs(_orthogonality_z(x0, x_t, naive, p_naive)).max() > 10 * Z_MAX


# ---- sample() ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_sample_mean_and_covariance(kind: str, global_rng_guard: None) -> None:
    """Sample mean z-scores use sd sqrt(C_ii / N); sample covariance entries of a Gaussian have
    variance (C_ii C_jj + C_ij^2) / N. 6 + 36 statistics, |z| < 5."""
    prior, mu, cov = build(kind, VPSchedule())
    n_samples = 20_000
    x = prior.sample(n_samples, torch.Generator().manual_seed(4)).reshape(n_samples, N).numpy()
    assert prior.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *X_SHAPE)
    z_mean = (x.mean(0) - mu.ravel()) / np.sqrt(np.diag(cov) / n_samples)
    s = np.cov(x, rowvar=False, bias=True)
    z_cov = (s - cov) / np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_samples)
    assert np.abs(z_mean).max() < Z_MAX and np.abs(z_cov).max() < Z_MAX
    # reproducible from the generator alone
    a = prior.sample(5, torch.Generator().manual_seed(9))
    b = prior.sample(5, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


# ---- eps and score through the Prior protocol helpers -----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_eps_and_score_match_the_gaussian_marginal(kind: str) -> None:
    schedule = VPSchedule()
    prior, mu, cov = build(kind, schedule)
    assert isinstance(prior, Prior)
    t = torch.tensor([2.0, 150.5, 999.0])
    x_t = torch.randn(3, *X_SHAPE, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    sc = score(prior, x_t, t).reshape(3, N).numpy()
    ep = eps(prior, x_t, t).reshape(3, N).numpy()
    for i in range(3):
        ab = float(schedule.alpha_bar(t[i]))
        cov_t = ab * cov + (1 - ab) * np.eye(N)
        ref = -np.linalg.solve(cov_t, x_t[i].reshape(-1).numpy() - math.sqrt(ab) * mu.ravel())
        np.testing.assert_allclose(sc[i], ref, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(ep[i], -math.sqrt(1 - ab) * ref, rtol=1e-8, atol=1e-8)
        # the score is the gradient of scipy's log-density of the marginal (central differences)
        logp = scipy.stats.multivariate_normal(math.sqrt(ab) * mu.ravel(), cov_t).logpdf
        x = x_t[i].reshape(-1).numpy()
        h = 1e-5
        grad = np.array([(logp(x + h * e) - logp(x - h * e)) / (2 * h) for e in np.eye(N)])
        np.testing.assert_allclose(sc[i], grad, rtol=1e-5, atol=1e-6)


# ---- representations agree -----------------------------------------------------------------------------------
def test_full_and_low_rank_agree_on_a_larger_shape() -> None:
    schedule = VPSchedule()
    shape = (2, 6, 6)
    n = math.prod(shape)
    f, d = low_rank_parts(n, 5, seed=3)
    mu = torch.tensor(mean_np(1, shape))
    lr = GaussianPrior.low_rank(mu, torch.tensor(f), torch.tensor(d), schedule)
    full = GaussianPrior.full(mu, torch.tensor(f @ f.T + np.diag(d)), schedule)
    assert (lr.kind, full.kind) == ("low_rank", "full")
    x_t = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.0, 100.0, 600.5, 999.0])
    torch.testing.assert_close(lr.denoise(x_t, t), full.denoise(x_t, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lr.covariance_matrix(), full.covariance_matrix(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lr.marginal_variance(), full.marginal_variance(), rtol=1e-12, atol=1e-12)
    assert lr.marginal_variance().shape == shape
    torch.testing.assert_close(lr.log_prob(x_t), full.log_prob(x_t), rtol=1e-10, atol=1e-9)


def test_diagonal_full_and_rank_zero_agree() -> None:
    schedule = VPSchedule("cosine")
    var = torch.tensor(np.random.default_rng(0).uniform(0.1, 2.0, X_SHAPE))
    mu = torch.tensor(mean_np())
    priors = [
        GaussianPrior.diagonal(mu, var, schedule),
        GaussianPrior.full(mu, torch.diag(var.reshape(-1)), schedule),
        GaussianPrior.low_rank(mu, torch.zeros(N, 0, dtype=torch.float64), var, schedule),
        GaussianPrior.low_rank(mu, torch.zeros(N, 3, dtype=torch.float64), var.reshape(-1), schedule),
    ]
    x_t = torch.randn(3, *X_SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.0, 321.0, 998.0])
    ref = priors[0]
    for p in priors[1:]:
        torch.testing.assert_close(p.denoise(x_t, t), ref.denoise(x_t, t), rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(p.covariance_matrix(), ref.covariance_matrix())
        torch.testing.assert_close(p.log_prob(x_t), ref.log_prob(x_t), rtol=1e-11, atol=1e-10)
    # a scalar variance broadcasts
    iso = GaussianPrior.diagonal(mu, 0.5, schedule)
    torch.testing.assert_close(iso.marginal_variance(), torch.full(X_SHAPE, 0.5, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_matches_scipy(kind: str) -> None:
    prior, mu, cov = build(kind, VPSchedule())
    x = torch.randn(4, *X_SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = scipy.stats.multivariate_normal(mu.ravel(), cov).logpdf(x.reshape(4, N).numpy())
    np.testing.assert_allclose(prior.log_prob(x).numpy(), ref, rtol=1e-10)
    assert prior.log_prob(x.float()).dtype == torch.float32


def test_moments_and_to_device() -> None:
    prior, mu, cov = build("full", VPSchedule())
    np.testing.assert_allclose(prior.covariance_matrix().numpy(), cov, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(prior.marginal_variance().numpy(), np.diag(cov).reshape(X_SHAPE), rtol=1e-13)
    ell = prior.sqrt_factor()
    np.testing.assert_allclose((ell @ ell.T).numpy(), cov, rtol=0, atol=1e-12)
    moved = prior.to("cpu")
    assert moved is not prior and moved.x_shape == prior.x_shape and moved.kind == "full"
    x_t = torch.zeros(1, *X_SHAPE, dtype=torch.float64)
    torch.testing.assert_close(moved.denoise(x_t, torch.tensor([10.0])), prior.denoise(x_t, torch.tensor([10.0])))
    assert "GaussianPrior(kind='full'" in repr(prior)


# ---- error paths ----------------------------------------------------------------------------------------------
def _mu() -> torch.Tensor:
    return torch.zeros(X_SHAPE, dtype=torch.float64)


def test_constructor_errors() -> None:
    s = VPSchedule()
    eye = torch.eye(N, dtype=torch.float64)
    asym = eye.clone()
    asym[0, 1] = 0.5
    with pytest.raises(ValueError, match="cov must be symmetric"):
        GaussianPrior.full(_mu(), asym, s)
    neg = eye.clone()
    neg[0, 0] = -1.0
    with pytest.raises(ValueError, match="cov must be positive semi-definite; smallest eigenvalue -1"):
        GaussianPrior.full(_mu(), neg, s)
    with pytest.raises(ValueError, match=r"cov must have shape \(n, n\) = \(6, 6\) .* got \(5, 5\)"):
        GaussianPrior.full(_mu(), torch.eye(5, dtype=torch.float64), s)
    nan_cov = eye.clone()
    nan_cov[2, 2] = float("nan")
    with pytest.raises(ValueError, match="cov contains NaN or inf"):
        GaussianPrior.full(_mu(), nan_cov, s)
    with pytest.raises(ValueError, match="mean contains NaN or inf"):
        GaussianPrior.full(torch.full(X_SHAPE, float("nan")), eye, s)
    with pytest.raises(TypeError, match="mean must be a real floating tensor, got dtype torch.complex64"):
        GaussianPrior.diagonal(torch.zeros(X_SHAPE, dtype=torch.complex64), 1.0, s)
    with pytest.raises(TypeError, match="mean must be a torch.Tensor, got list"):
        GaussianPrior.diagonal([0.0, 1.0], 1.0, s)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mean must have the per-item shape"):
        GaussianPrior.diagonal(torch.tensor(0.0), 1.0, s)
    with pytest.raises(TypeError, match="schedule must be an invdiff.schedule.VPSchedule, got str"):
        GaussianPrior.full(_mu(), eye, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="var must be >= 0, got minimum -0.5"):
        GaussianPrior.diagonal(_mu(), torch.tensor([1.0, -0.5, 1.0]), s)
    with pytest.raises(ValueError, match=r"var must be broadcastable to x_shape \(1, 2, 3\), got shape \(4,\)"):
        GaussianPrior.diagonal(_mu(), torch.ones(4), s)
    with pytest.raises(ValueError, match="var contains NaN or inf"):
        GaussianPrior.diagonal(_mu(), float("inf"), s)
    with pytest.raises(ValueError, match=r"factor must have shape \(n, r\) with n = 6, got \(5, 2\)"):
        GaussianPrior.low_rank(_mu(), torch.ones(5, 2), 1.0, s)
    with pytest.raises(ValueError, match="diag must be >= 0, got minimum -1"):
        GaussianPrior.low_rank(_mu(), torch.ones(N, 2), -1.0, s)
    with pytest.raises(ValueError, match=r"diag must be a float, an \(n,\) = \(6,\) tensor .* got shape \(4,\)"):
        GaussianPrior.low_rank(_mu(), torch.ones(N, 2), torch.ones(4), s)


def test_call_errors() -> None:
    prior = GaussianPrior.full(_mu(), torch.eye(N, dtype=torch.float64), VPSchedule())
    x = torch.zeros(2, *X_SHAPE)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 1, 2, 3\), got \(2, 6\)"):
        prior.denoise(torch.zeros(2, 6), torch.zeros(2))
    with pytest.raises(TypeError, match="x_t must be a real floating tensor, got dtype torch.int64"):
        prior.denoise(torch.zeros(2, *X_SHAPE, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="x_t contains NaN or inf"):
        prior.denoise(torch.full((2, *X_SHAPE), float("nan")), torch.zeros(2))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\) or be a scalar, got \(3,\)"):
        prior.denoise(x, torch.zeros(3))
    with pytest.raises(ValueError, match="t contains NaN or inf"):
        prior.denoise(x, torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        prior.denoise(x, torch.tensor([0.0, 1000.0]))
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        prior.sample(0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 2, 3\)"):
        prior.log_prob(torch.zeros(*X_SHAPE))
    singular = GaussianPrior.full(_mu(), torch.zeros(N, N, dtype=torch.float64), VPSchedule())
    with pytest.raises(ValueError, match="covariance is singular"):
        singular.log_prob(x)
    with pytest.raises(ValueError, match="variances are zero"):
        GaussianPrior.diagonal(_mu(), 0.0, VPSchedule()).log_prob(x)
    with pytest.raises(ValueError, match="needs diag > 0"):
        GaussianPrior.low_rank(_mu(), torch.ones(N, 1), 0.0, VPSchedule()).log_prob(x)
