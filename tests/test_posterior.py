"""Closed-form Gaussian posterior against independent references.

References: the joint Gaussian of (x, y) conditioned with plain ``numpy.linalg.solve`` (a different
formula from the SVD square-root form in ``invdiff/posterior.py``), Bayes' rule integrated numerically on
a grid in 2-D, and a Monte Carlo check of the complex-noise convention through ``GaussianNoise.sample``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from invdiff.operators import GaussianNoise, LinearOperator, Operator, PoissonNoise
from invdiff.posterior import MAX_POSTERIOR_DIM, gaussian_posterior, operator_matrix, posterior_marginal_std
from invdiff.priors.gaussian import GaussianPrior
from invdiff.schedule import VPSchedule

SCHEDULE = VPSchedule()
Z_MAX = 5.0


class Dense(LinearOperator):
    """A dense matrix on flattened real inputs; complex matrices give complex measurements."""

    def __init__(self, matrix: Tensor, x_shape: tuple[int, ...], y_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.y_is_complex = matrix.is_complex()
        if self.y_is_complex:
            self.register_complex_buffer("matrix", matrix)
        else:
            self.register_buffer("matrix", matrix)
        self.x_shape = tuple(x_shape)
        self.y_shape = tuple(y_shape) if y_shape is not None else (matrix.shape[0],)

    def _m(self) -> Tensor:
        return self.complex_buffer("matrix") if self.y_is_complex else self.matrix

    def forward(self, x: Tensor) -> Tensor:
        m = self._m()
        xf = x.reshape(x.shape[0], -1)
        xf = xf.to(torch.promote_types(xf.dtype, m.dtype))
        return (xf @ m.T).reshape(x.shape[0], *self.y_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        m = self._m()
        out = y.reshape(y.shape[0], -1) @ m.conj().to(torch.promote_types(y.dtype, m.dtype))
        return (out.real if out.is_complex() else out).reshape(y.shape[0], *self.x_shape)


class Square(Operator):
    """A non-linear operator, for the error path."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.x_shape = self.y_shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x**2


class ComplexInput(Dense):
    x_is_complex = True


def random_spd(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def np_posterior(mu: np.ndarray, cov: np.ndarray, a: np.ndarray, y: np.ndarray, sigma: float):
    """Condition the joint Gaussian of (x, y = A x + sigma n): rows of ``y`` are items."""
    s_xy = cov @ a.T
    s_yy = a @ cov @ a.T + sigma**2 * np.eye(a.shape[0])
    mean = mu + np.linalg.solve(s_yy, (y - a @ mu).T).T @ s_xy.T
    post = cov - s_xy @ np.linalg.solve(s_yy, s_xy.T)
    return mean, post


def make_prior(kind: str, x_shape: tuple[int, ...], seed: int = 0) -> tuple[GaussianPrior, np.ndarray, np.ndarray]:
    n = math.prod(x_shape)
    rng = np.random.default_rng(seed + 100)
    mu = rng.standard_normal(n) * 0.5
    mu_t = torch.tensor(mu).reshape(x_shape)
    if kind == "full":
        cov = random_spd(n, seed)
        return GaussianPrior.full(mu_t, torch.tensor(cov), SCHEDULE), mu, cov
    if kind == "diagonal":
        var = rng.uniform(0.2, 2.0, n)
        return GaussianPrior.diagonal(mu_t, torch.tensor(var).reshape(x_shape), SCHEDULE), mu, np.diag(var)
    f, d = rng.standard_normal((n, 2)), rng.uniform(0.1, 0.5, n)
    return GaussianPrior.low_rank(mu_t, torch.tensor(f), torch.tensor(d), SCHEDULE), mu, f @ f.T + np.diag(d)


# ---- against the joint-Gaussian conditioning -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["full", "diagonal", "low_rank"])
@pytest.mark.parametrize(("n", "m"), [(4, 2), (5, 3), (6, 9)])
def test_matches_joint_gaussian_conditioning(kind: str, n: int, m: int) -> None:
    x_shape = (1, n)
    prior, mu, cov = make_prior(kind, x_shape, seed=n)
    rng = np.random.default_rng(m)
    a = rng.standard_normal((m, n))
    op = Dense(torch.tensor(a, dtype=torch.float32), x_shape)  # float32 buffers: the oracle works in float64
    y = rng.standard_normal((3, m))
    sigma = 0.3
    mean, post = gaussian_posterior(prior, op, torch.tensor(y), GaussianNoise(sigma))
    ref_mean, ref_cov = np_posterior(mu, cov, a.astype(np.float32).astype(np.float64), y, sigma)
    assert mean.shape == (3, *x_shape) and post.shape == (n, n)
    assert mean.dtype == post.dtype == torch.float64
    np.testing.assert_allclose(mean.reshape(3, n).numpy(), ref_mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.numpy(), ref_cov, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(posterior_marginal_std(prior, op, GaussianNoise(sigma)).reshape(-1).numpy(),
                               np.sqrt(np.diag(ref_cov)), rtol=1e-9)
    assert op.matrix.dtype == torch.float32  # the caller's operator is untouched


def test_matches_bayes_rule_integrated_on_a_grid() -> None:
    """2-D Bayes: prior density x likelihood on a 801^2 grid (spectrally accurate for Gaussian tails)."""
    mu = np.array([0.3, -0.2])
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    a = np.array([[1.0, 0.5]])
    sigma, y = 0.4, 0.9
    prior = GaussianPrior.full(torch.tensor(mu).reshape(1, 2), torch.tensor(cov), SCHEDULE)
    mean, post = gaussian_posterior(prior, Dense(torch.tensor(a), (1, 2)), torch.tensor([[y]], dtype=torch.float64), GaussianNoise(sigma))

    g1 = np.linspace(mu[0] - 8, mu[0] + 8, 801)
    g2 = np.linspace(mu[1] - 8, mu[1] + 8, 801)
    x1, x2 = np.meshgrid(g1, g2, indexing="ij")
    d1, d2 = x1 - mu[0], x2 - mu[1]
    prec = np.linalg.inv(cov)
    log_prior = -0.5 * (prec[0, 0] * d1**2 + 2 * prec[0, 1] * d1 * d2 + prec[1, 1] * d2**2)
    log_lik = -0.5 * (y - (a[0, 0] * x1 + a[0, 1] * x2)) ** 2 / sigma**2
    w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= w.sum()
    m1, m2 = (w * x1).sum(), (w * x2).sum()
    c11, c22 = (w * (x1 - m1) ** 2).sum(), (w * (x2 - m2) ** 2).sum()
    c12 = (w * (x1 - m1) * (x2 - m2)).sum()
    np.testing.assert_allclose(mean.reshape(2).numpy(), [m1, m2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(post.numpy(), [[c11, c12], [c12, c22]], rtol=0, atol=1e-9)


# ---- complex measurements of a real x ----------------------------------------------------------------------
def _complex_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, m = 4, 3
    a = rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n))
    prior, mu, cov = make_prior("full", (1, n), seed=seed)
    return prior, mu, cov, a, Dense(torch.tensor(a, dtype=torch.complex64), (1, n))


def test_complex_measurement_counts_real_and_imaginary_parts() -> None:
    prior, mu, cov, a, op = _complex_problem()
    a = a.astype(np.complex64).astype(np.complex128)
    a_real = np.concatenate([a.real, a.imag], axis=0)
    np.testing.assert_allclose(operator_matrix(op).numpy(), a_real, rtol=0, atol=1e-15)
    y = np.array([[0.5 - 1j, 0.2 + 0.3j, -1.0 + 0.1j]])
    sigma = 0.25
    mean, post = gaussian_posterior(prior, op, torch.tensor(y, dtype=torch.complex64), GaussianNoise(sigma))
    y64 = y.astype(np.complex64).astype(np.complex128)
    ref_mean, ref_cov = np_posterior(mu, cov, a_real, np.concatenate([y64.real, y64.imag], axis=1), sigma)
    np.testing.assert_allclose(mean.reshape(1, -1).numpy(), ref_mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.numpy(), ref_cov, rtol=1e-9, atol=1e-10)


def test_complex_noise_convention_by_simulation() -> None:
    """Measurements simulated by ``GaussianNoise.sample`` (complex: sigma per part): the residual
    R = x0 - E[x | y] must have mean 0, be uncorrelated with Re y and Im y, and have covariance ``cov``.
    R is independent of y, so Var(R_i y_j) = cov_ii E[y_j^2]; sample covariance entries have variance
    (P_ii P_jj + P_ij^2)/N. With 4 + 24 + 16 statistics and |z| < 5, false failures have p < 3e-5.
    A factor-2 error in the noise variance would shift the residual covariance by tens of sigmas.
    """
    prior, mu, cov, _, op = _complex_problem(seed=1)
    op = op.to(torch.float64)
    noise = GaussianNoise(0.5)
    n_samples = 20_000
    x0 = prior.sample(n_samples, torch.Generator().manual_seed(0))
    y = noise.sample(op(x0), generator=torch.Generator().manual_seed(1))
    mean, post = gaussian_posterior(prior, op, y, noise)
    r = (x0 - mean).reshape(n_samples, -1).numpy()
    y_real = torch.cat([y.real, y.imag], dim=1).numpy()
    p = post.numpy()
    pd = np.diag(p)
    z_mean = r.mean(0) / np.sqrt(pd / n_samples)
    z_cross = (r.T @ y_real / n_samples) / np.sqrt(np.outer(pd, (y_real**2).mean(0)) / n_samples)
    z_cov = (r.T @ r / n_samples - p) / np.sqrt((np.outer(pd, pd) + p**2) / n_samples)
    for z in (z_mean, z_cross, z_cov):
        assert np.abs(z).max() < Z_MAX
    # the wrong convention (complex variance sigma^2, i.e. sigma/sqrt(2) per part) is detected
    _, wrong = gaussian_posterior(prior, op, y[:1], GaussianNoise(0.5 / math.sqrt(2)))
    wp = wrong.numpy()
    z_wrong = (r.T @ r / n_samples - wp) / np.sqrt((np.outer(np.diag(wp), np.diag(wp)) + wp**2) / n_samples)
    assert np.abs(z_wrong).max() > 2 * Z_MAX


# ---- limits ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.1, 0.0])
def test_zero_operator_gives_the_prior(sigma: float) -> None:
    x_shape = (1, 2, 3)
    prior, mu, cov = make_prior("full", x_shape)
    op = Dense(torch.zeros(4, 6), x_shape)  # e.g. a mask of zeros
    y = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, post = gaussian_posterior(prior, op, y, GaussianNoise(sigma))
    np.testing.assert_allclose(mean.reshape(2, -1).numpy(), np.stack([mu, mu]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(post.numpy(), cov, rtol=0, atol=1e-12)


def test_identity_with_vanishing_noise_returns_y() -> None:
    x_shape = (2, 2)
    prior, mu, cov = make_prior("full", x_shape, seed=3)
    op = Dense(torch.eye(4, dtype=torch.float64), x_shape, x_shape)
    y = torch.randn(2, *x_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errors = []
    for sigma in (1e-1, 1e-2, 1e-3, 1e-5):
        mean, post = gaussian_posterior(prior, op, y, GaussianNoise(sigma))
        errors.append(float((mean - y).abs().max()))
        # posterior covariance -> sigma^2 I as sigma -> 0: (C^-1 + I/sigma^2)^-1 = sigma^2 (I - sigma^2 C^-1 + ...)
        assert float((post - sigma**2 * torch.eye(4, dtype=torch.float64)).abs().max()) < 2 * sigma**4 * np.abs(
            np.linalg.inv(cov)).max()
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-9
    mean, post = gaussian_posterior(prior, op, y, GaussianNoise(0.0))
    torch.testing.assert_close(mean, y, rtol=0, atol=1e-12)
    torch.testing.assert_close(post, torch.zeros(4, 4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_noiseless_mask_conditions_on_observed_entries() -> None:
    """sigma = 0 with a mask: observed entries equal y; the rest follow the Gaussian conditional."""
    n = 6
    prior, mu, cov = make_prior("full", (n,), seed=5)
    obs = np.array([0, 2, 3])
    hid = np.array([1, 4, 5])
    a = np.eye(n)[obs]
    y = np.array([[0.7, -0.4, 1.1]])
    mean, post = gaussian_posterior(prior, Dense(torch.tensor(a), (n,)), torch.tensor(y), GaussianNoise(0.0))
    c_oo, c_ho = cov[np.ix_(obs, obs)], cov[np.ix_(hid, obs)]
    ref_hid = mu[hid] + c_ho @ np.linalg.solve(c_oo, y[0] - mu[obs])
    ref_cov_hid = cov[np.ix_(hid, hid)] - c_ho @ np.linalg.solve(c_oo, c_ho.T)
    np.testing.assert_allclose(mean[0, obs].numpy(), y[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(mean[0, hid].numpy(), ref_hid, rtol=0, atol=1e-10)
    np.testing.assert_allclose(post[np.ix_(hid, hid)].numpy(), ref_cov_hid, rtol=0, atol=1e-10)
    np.testing.assert_allclose(post[obs].numpy(), 0.0, rtol=0, atol=1e-10)


def test_multidimensional_measurement_and_float32_prior() -> None:
    x_shape, y_shape = (2, 3), (2, 2)
    rng = np.random.default_rng(4)
    cov = random_spd(6, 4)
    mu = rng.standard_normal(6)
    a = rng.standard_normal((4, 6))
    prior32 = GaussianPrior.full(torch.tensor(mu, dtype=torch.float32).reshape(x_shape),
                                 torch.tensor(cov, dtype=torch.float32), SCHEDULE)
    y = rng.standard_normal((2, 4))
    mean, post = gaussian_posterior(prior32, Dense(torch.tensor(a), x_shape, y_shape),
                                    torch.tensor(y, dtype=torch.float32).reshape(2, *y_shape), GaussianNoise(0.2))
    assert mean.shape == (2, *x_shape) and mean.dtype == torch.float64
    ref_mean, ref_cov = np_posterior(mu, cov, a, y, 0.2)
    np.testing.assert_allclose(mean.reshape(2, 6).numpy(), ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.numpy(), ref_cov, rtol=1e-5, atol=1e-5)


def test_with_library_inpainting_when_present() -> None:
    """One check with a library operator family (Inpainting), when operators/masking.py is available."""
    masking = pytest.importorskip("invdiff.operators.masking")
    x_shape = (1, 3, 3)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    op = masking.Inpainting(mask, channels=1)
    assert tuple(op.x_shape) == x_shape
    prior, mu, cov = make_prior("full", x_shape, seed=9)
    y = torch.randn(1, *op.y_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, post = gaussian_posterior(prior, op, y, GaussianNoise(0.1))
    a = np.diag(mask.reshape(-1).double().numpy())  # the mask as a matrix, built independently
    ref_mean, ref_cov = np_posterior(mu, cov, a, y.reshape(1, -1).numpy(), 0.1)
    np.testing.assert_allclose(mean.reshape(1, -1).numpy(), ref_mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(post.numpy(), ref_cov, rtol=1e-9, atol=1e-10)


def test_with_library_single_coil_mri_when_present() -> None:
    """Two-channel single-coil MRI with an isotropic prior N(mu, s^2 I). A = M F is a partial isometry
    over the reals, so A A^T = diag(mask) and the posterior is closed form:
    mean = mu + s^2 / (s^2 + sigma^2) A^T (y - A mu), marginal variance s^2 - s^4 mean(mask) / (s^2 + sigma^2)
    (each pixel of F^H M F has diagonal mean(mask)). Checks the complex-measurement convention on a real op."""
    mri = pytest.importorskip("invdiff.operators.mri")
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]).expand(4, 6)
    op = mri.SinglecoilMRI(mask, complex_channels=True)
    x_shape = tuple(op.x_shape)
    assert x_shape == (2, 4, 6)
    s2, sigma = 0.7, 0.2
    mu = torch.randn(x_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prior = GaussianPrior.diagonal(mu, s2, SCHEDULE)
    g = torch.Generator().manual_seed(2)
    y = torch.complex(torch.randn(2, *op.y_shape, generator=g, dtype=torch.float64),
                      torch.randn(2, *op.y_shape, generator=g, dtype=torch.float64))
    y = y * mask  # zero where k-space is not sampled, as measured data is
    mean, post = gaussian_posterior(prior, op, y, GaussianNoise(sigma))
    op64 = op.to(torch.float64)
    ref_mean = mu + s2 / (s2 + sigma**2) * op64.adjoint(y - op64(mu.expand(2, *x_shape)))
    torch.testing.assert_close(mean, ref_mean, rtol=1e-10, atol=1e-10)
    ref_var = s2 - s2**2 * float(mask.mean()) / (s2 + sigma**2)
    torch.testing.assert_close(post.diagonal(), torch.full((post.shape[0],), ref_var, dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)


# ---- error paths ----------------------------------------------------------------------------------------------
def test_errors() -> None:
    x_shape = (1, 4)
    prior, _, _ = make_prior("full", x_shape)
    op = Dense(torch.ones(2, 4, dtype=torch.float64), x_shape)
    y = torch.zeros(1, 2, dtype=torch.float64)
    noise = GaussianNoise(0.1)
    with pytest.raises(TypeError, match="prior must be a GaussianPrior .*, got str"):
        gaussian_posterior("prior", op, y, noise)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="op must be a LinearOperator .*, got Square"):
        gaussian_posterior(prior, Square(x_shape), y, noise)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="op takes complex inputs"):
        gaussian_posterior(prior, ComplexInput(torch.ones(2, 4, dtype=torch.complex64), x_shape), y, noise)
    with pytest.raises(TypeError, match="noise must be GaussianNoise, got PoissonNoise"):
        gaussian_posterior(prior, op, y, PoissonNoise(1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"operator x_shape \(4,\) does not match the prior's x_shape \(1, 4\)"):
        gaussian_posterior(prior, Dense(torch.ones(2, 4), (4,)), y, noise)
    with pytest.raises(ValueError, match=r"y has shape \(1, 3\)"):
        gaussian_posterior(prior, op, torch.zeros(1, 3), noise)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        gaussian_posterior(prior, op, torch.full((1, 2), float("nan")), noise)
    big = GaussianPrior.diagonal(torch.zeros(1, MAX_POSTERIOR_DIM + 1), 1.0, SCHEDULE)
    big_op = Dense(torch.zeros(1, MAX_POSTERIOR_DIM + 1), (1, MAX_POSTERIOR_DIM + 1))
    with pytest.raises(ValueError, match=f"prod\\(x_shape\\) = {MAX_POSTERIOR_DIM + 1} exceeds MAX_POSTERIOR_DIM"):
        gaussian_posterior(big, big_op, torch.zeros(1, 1), noise)
    with pytest.raises(ValueError, match="exceeds MAX_POSTERIOR_DIM"):
        operator_matrix(big_op)
    with pytest.raises(TypeError, match="op must be a LinearOperator"):
        operator_matrix(Square(x_shape))  # type: ignore[arg-type]
