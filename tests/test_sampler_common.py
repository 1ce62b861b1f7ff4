"""Shared contract of the posterior samplers, and the closed-form Gaussian problems their tests use.

Every problem has a Gaussian prior with a *non-diagonal* covariance (a squared-exponential kernel over
pixels, Kronecker with a 2 x 2 channel covariance for two-channel MRI images), a real linear operator
from ``invdiff.operators`` and Gaussian noise, so the posterior is known exactly
(``invdiff.posterior.gaussian_posterior``). The other sampler test modules import the builders from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from invdiff.operators import GaussianNoise, LinearOperator, Operator
from invdiff.operators.blur import Blur, gaussian_kernel
from invdiff.operators.coil_maps import birdcage_maps
from invdiff.operators.masking import Inpainting
from invdiff.operators.mri import MulticoilMRI, SinglecoilMRI
from invdiff.posterior import gaussian_posterior, operator_matrix
from invdiff.priors.gaussian import GaussianPrior
from invdiff.samplers import CALLBACK_KEYS, Reconstruction, red_diff, smc
from invdiff.schedule import VPSchedule

SAMPLERS: dict[str, Callable[..., Reconstruction]] = {"red_diff": red_diff, "smc": smc}
# Cheap settings for the contract tests (not accuracy).
QUICK: dict[str, dict[str, object]] = {
    "red_diff": {"steps": 6},
    "smc": {"particles": 5, "steps": 6},
}
OPERATORS = ("mask", "blur", "singlecoil", "multicoil")


@pytest.fixture(autouse=True)
def single_thread():
    """These are many tiny tensor ops; on a small shared CPU one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- problem builders ----------------------------------------------------------------------------
def rbf_covariance(spatial: tuple[int, int], *, var: float = 0.8, length: float = 1.5, nugget: float = 0.05) -> Tensor:
    """Squared-exponential covariance over an ``H x W`` grid plus a nugget (full rank, non-diagonal)."""
    h, w = spatial
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2).double()
    d2 = ((grid[:, None] - grid[None]) ** 2).sum(-1)
    return var * torch.exp(-d2 / (2 * length**2)) + nugget * torch.eye(h * w, dtype=torch.float64)


def make_prior(x_shape: tuple[int, ...], seed: int = 0) -> GaussianPrior:
    """``N(m, C)`` over ``x_shape`` = ``(1, H, W)`` or ``(2, H, W)`` (real/imaginary channels, correlated)."""
    g = torch.Generator().manual_seed(seed)
    channels, h, w = x_shape
    cov = rbf_covariance((h, w))
    if channels == 2:
        cov = torch.kron(torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=torch.float64), cov)
    mean = 0.3 * torch.randn(x_shape, generator=g, dtype=torch.float64)
    return GaussianPrior.full(mean, cov, VPSchedule())


def make_operator(name: str) -> LinearOperator:
    """Small float64 operators: 6 x 6 single-channel images, 4 x 4 two-channel MRI images."""
    if name == "mask":
        mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) < 0.5
        return Inpainting(mask).double()
    if name == "zero":
        return Inpainting(torch.zeros(6, 6, dtype=torch.bool)).double()
    if name == "blur":
        return Blur(gaussian_kernel(1.0, size=5), (1, 6, 6)).double()
    columns = torch.zeros(4, 4)
    columns[:, [0, 2]] = 1.0  # two of four k-space columns, the centre (DC, index 2) included
    if name == "singlecoil":
        return SinglecoilMRI(columns, complex_channels=True).double()
    if name == "multicoil":
        return MulticoilMRI(columns, birdcage_maps((4, 4), 4), complex_channels=True).double()
    if name == "zero_mri":
        return SinglecoilMRI(torch.zeros(4, 4), complex_channels=True).double()
    raise KeyError(name)


@dataclass(frozen=True)
class Problem:
    prior: GaussianPrior
    op: LinearOperator
    noise: GaussianNoise
    x0: Tensor  # (B, *x_shape) ground truth draws from the prior
    y: Tensor  # (B, *y_shape)
    post_mean: Tensor  # (B, *x_shape)
    post_cov: Tensor  # (n, n)

    @property
    def post_var(self) -> Tensor:
        return self.post_cov.diagonal().reshape(self.prior.x_shape)


def make_problem(name: str, *, sigma: float = 0.3, batch: int = 2, seed: int = 5) -> Problem:
    op = make_operator(name)
    prior = make_prior(tuple(op.x_shape))
    noise = GaussianNoise(sigma)
    g = torch.Generator().manual_seed(seed)
    x0 = prior.sample(batch, g)
    y = noise.sample(op(x0), generator=g)
    mean, cov = gaussian_posterior(prior, op, y, noise)
    return Problem(prior, op, noise, x0, y, mean, cov)


class DenseOperator(Operator):
    """A matrix ``A`` applied by autograd only (``is_linear`` False): the non-linear code paths, with a known answer."""

    def __init__(self, matrix: Tensor, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.x_shape, self.y_shape = x_shape, y_shape

    def forward(self, x: Tensor) -> Tensor:
        return (x.reshape(x.shape[0], -1) @ self.matrix.T.to(x.dtype)).reshape(x.shape[0], *self.y_shape)


def as_nonlinear(op: LinearOperator) -> DenseOperator:
    """The same map as ``op`` (real measurements only), hidden behind the plain ``Operator`` tier."""
    return DenseOperator(operator_matrix(op), tuple(op.x_shape), tuple(op.y_shape))


# ---- the shared contract ---------------------------------------------------------------------------
def _problem(name: str, **kw: object) -> Problem:
    # sigma = 1.5 keeps 6 explicit SMC steps stable (h beta ||A||^2 / sigma^2 < 2) for the contract checks.
    return make_problem(name, sigma=1.5, **kw)  # type: ignore[arg-type]


def _run(name: str, problem: Problem, **extra: object) -> Reconstruction:
    options = {**QUICK[name], **extra}
    return SAMPLERS[name](problem.prior, problem.op, problem.y, noise=problem.noise, **options)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_returns_reconstruction_with_shapes(name: str) -> None:
    p = _problem("mask", batch=3)
    out = _run(name, p, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, Reconstruction)
    assert out.x.shape == p.y.shape and out.x.dtype == torch.float64
    assert bool(torch.isfinite(out.x).all())
    assert out.diagnostics["misfit"].shape == (6, 3)
    assert float(out.diagnostics["wall_s"]) > 0
    if name == "smc":
        assert int(out.diagnostics["nfe"]) == 5 * 6
        assert out.samples is not None and out.samples.shape == (3, 5, 1, 6, 6)
        assert out.log_weights is not None and out.log_weights.shape == (3, 5)
        assert torch.allclose(out.log_weights.logsumexp(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
        assert out.std is not None and out.std.shape == out.x.shape
        assert out.diagnostics["ess"].shape == (6, 3)
    else:
        assert int(out.diagnostics["nfe"]) == 6
        assert out.samples is None and out.log_weights is None


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_output_and_global_rng_untouched(name: str, global_rng_guard: None) -> None:
    p = _problem("singlecoil")
    a = _run(name, p, generator=torch.Generator().manual_seed(11))
    b = _run(name, p, generator=torch.Generator().manual_seed(11))
    c = _run(name, p, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.x, b.x)
    assert not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_result_does_not_depend_on_batch_size(name: str) -> None:
    p = _problem("multicoil", batch=3)
    ref = _run(name, p, batch_size=64, generator=torch.Generator().manual_seed(4))
    for batch_size in (1, 4):
        out = _run(name, p, batch_size=batch_size, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(out.x, ref.x, rtol=1e-10, atol=1e-10)
        if name == "smc":
            assert bool(ref.diagnostics["resampled"].any())  # the resampling path is exercised too
            torch.testing.assert_close(out.log_weights, ref.log_weights, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_batch_items_are_independent(name: str) -> None:
    """Item 0 of a batch gets the same result whatever item 1 is (no norm or state shared across items)."""
    p = _problem("mask", batch=2)
    other = p.y.clone()
    other[1] = 10 * other[1] + 3
    a = _run(name, p, generator=torch.Generator().manual_seed(2))
    b = SAMPLERS[name](p.prior, p.op, other, noise=p.noise, **QUICK[name], generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.x[0], b.x[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_fires_once_per_step_with_fixed_keys(name: str) -> None:
    p = _problem("singlecoil")
    seen: list[dict[str, object]] = []
    _run(name, p, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert len(seen) == 6
    keys = {frozenset(info) for info in seen}
    assert len(keys) == 1
    assert set(CALLBACK_KEYS) <= next(iter(keys))
    assert [info["step"] for info in seen] == list(range(6))
    assert all(info["steps"] == 6 for info in seen)
    times = [info["t"] for info in seen]
    assert times == sorted(times, reverse=True) and times[0] == 999.0
    assert not torch.equal(seen[0]["x"], seen[-1]["x"])  # each step hands over its own tensor, not a live view
    for info in seen:
        assert info["x"].shape == p.y.shape[:1] + p.op.x_shape  # type: ignore[union-attr]
        assert info["misfit"].shape == (2,)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_progress_bar_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = _problem("mask")
    out = _run(name, p, generator=torch.Generator().manual_seed(0), progress=True)
    assert out.x.shape == p.y.shape


# ---- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_measurements_raise(name: str) -> None:
    p = _problem("mask")
    fn = SAMPLERS[name]
    with pytest.raises(ValueError, match=r"y has shape \(2, 1, 5, 6\)"):
        fn(p.prior, p.op, p.y[..., :5, :], noise=p.noise)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        fn(p.prior, p.op, p.y.clone().fill_(math.nan), noise=p.noise)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        fn(p.prior, p.op, p.y.tolist(), noise=p.noise)
    mri = _problem("singlecoil")
    with pytest.raises(TypeError, match="expects complex k-space"):
        fn(mri.prior, mri.op, mri.y.real, noise=mri.noise)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        bad = mri.y.clone()
        bad[0, 0, 0, 0] = complex(0, math.inf)
        fn(mri.prior, mri.op, bad, noise=mri.noise)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_components_raise(name: str) -> None:
    p = _problem("mask")
    mri = _problem("singlecoil")
    fn = SAMPLERS[name]
    with pytest.raises(ValueError, match=r"prior.x_shape \(2, 4, 4\) differs from op.x_shape \(1, 6, 6\)"):
        fn(mri.prior, p.op, p.y, noise=p.noise)
    with pytest.raises(TypeError, match="prior must implement the Prior protocol"):
        fn(object(), p.op, p.y, noise=p.noise)
    with pytest.raises(TypeError, match="op must be an invdiff.operators.Operator"):
        fn(p.prior, lambda x: x, p.y, noise=p.noise)
    with pytest.raises(TypeError, match="complex_channels=True"):
        fn(mri.prior, SinglecoilMRI(torch.ones(4, 4)), mri.y, noise=mri.noise)
    with pytest.raises(ValueError, match=r"noise.sigma must be > 0 .*got 0"):
        fn(p.prior, p.op, p.y, noise=GaussianNoise(0))
    with pytest.raises(TypeError, match="noise must be a noise model with an nll"):
        fn(p.prior, p.op, p.y, noise=0.1)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        fn(p.prior, p.op, p.y, noise=p.noise, generator=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(("option", "value", "message"), [
    ("steps", 0, "steps must be an integer >= 1, got 0"),
    ("steps", 2.5, "steps must be an integer >= 1, got 2.5"),
    ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
])
def test_bad_shared_options_raise(name: str, option: str, value: object, message: str) -> None:
    p = _problem("mask")
    with pytest.raises(ValueError, match=message):
        SAMPLERS[name](p.prior, p.op, p.y, noise=p.noise, **{option: value})


def test_problem_builders_are_consistent() -> None:
    """The oracle itself: the prior has the intended non-diagonal covariance and the posterior shrinks it."""
    for name in OPERATORS:
        p = make_problem(name)
        cov = p.prior.covariance_matrix()
        assert (cov - torch.diag(cov.diagonal())).abs().max() > 0.1
        assert bool((p.post_var.flatten() <= cov.diagonal() + 1e-12).all())
        assert float((cov.diagonal() - p.post_var.flatten()).max()) > 0.05
