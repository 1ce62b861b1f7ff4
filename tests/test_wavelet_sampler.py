"""``wavelet_latent``: samplers run unchanged in an orthonormal wavelet latent, checked against the closed-form
posterior computed in *image* space.

The oracle: a Gaussian prior ``N(m, S)`` on latents ``z = W x`` is the image prior ``N(W^T m, W^T S W)``
(``W`` orthonormal), so ``invdiff.posterior.gaussian_posterior`` on the image prior gives the exact answer.
The latent prior here is a classic wavelet-domain model: independent coefficients with a variance per subband
(Daubechies-2, so the image covariance is non-diagonal and the boundary rows matter).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_sampler_common import single_thread  # noqa: F401  (autouse fixture)
from test_smc import check_moments
from torch import Tensor

from invdiff.operators import Blur, GaussianNoise, Inpainting, LinearOperator, WaveletTransform, gaussian_kernel
from invdiff.posterior import gaussian_posterior, operator_matrix
from invdiff.priors import GaussianPrior, NetworkPrior, WaveletLatentPrior, build_unet
from invdiff.samplers import CALLBACK_KEYS, Reconstruction, red_diff, wavelet_latent
from invdiff.schedule import VPSchedule

IMAGE = (1, 8, 8)
SUBBAND_VAR = (1.5, 0.4, 0.4, 0.15)  # aa, ad, da, dd


def latent_problem(op_name: str, *, sigma: float, batch: int = 2, seed: int = 5):  # noqa: ANN201
    w = WaveletTransform(IMAGE, "db2")
    g = torch.Generator().manual_seed(seed)
    var = torch.tensor(SUBBAND_VAR, dtype=torch.float64).view(4, 1, 1).expand(w.y_shape)
    mean = 0.3 * torch.randn(w.y_shape, dtype=torch.float64, generator=g)
    latent = GaussianPrior.diagonal(mean, var, VPSchedule())
    m = operator_matrix(w)  # (64, 64): z = M x
    image_prior = GaussianPrior.full(w.adjoint(mean[None])[0], m.T @ torch.diag(var.reshape(-1)) @ m, VPSchedule())
    if op_name == "mask":
        op: LinearOperator = Inpainting(torch.rand(8, 8, generator=torch.Generator().manual_seed(3)) < 0.5).double()
    else:
        op = Blur(gaussian_kernel(1.0, size=5), IMAGE).double()
    noise = GaussianNoise(sigma)
    x0 = image_prior.sample(batch, g)
    y = noise.sample(op(x0), generator=g)
    post_mean, post_cov = gaussian_posterior(image_prior, op, y, noise)
    return w, latent, image_prior, op, noise, y, post_mean, post_cov.diagonal().reshape(IMAGE)


def _rms(err: Tensor, scale: Tensor) -> Tensor:
    return (err / scale).pow(2).flatten(1).mean(1).sqrt()


def test_latent_gaussian_denoiser_is_the_image_gaussian_denoiser() -> None:
    """E[z0 | z_t] for N(m, S) equals W E[x0 | x_t] for N(W^T m, W^T S W) with z_t = W x_t: the two priors are one."""
    w, latent, image_prior, *_ = latent_problem("mask", sigma=0.3)
    x_t = torch.randn(3, *IMAGE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10.0, 300.0, 900.0])
    torch.testing.assert_close(latent.denoise(w(x_t), t), w(image_prior.denoise(x_t, t)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("op_name", "t0"), [("mask", 30.0), ("blur", 60.0)])
def test_red_diff_in_the_latent_reaches_the_image_space_closed_form(op_name: str, t0: float) -> None:
    """RED-Diff with ``t`` fixed at ``t0``, ``weighting="const"``, ``lam = 1/s`` has the posterior mode under the
    smoothed prior ``N(m, S + s^2 I)`` as its fixed point (tests/test_red_diff.py). In image space that prior is
    ``N(W^T m, W^T S W + s^2 I)`` (W orthonormal), so its mode comes from ``gaussian_posterior`` on images.
    Tolerance as for RED-Diff in image space: 0.12 posterior std rms (8 replicates), max 0.3; measured over 3
    seeds: mask 0.04-0.07 rms (max 0.13-0.21), blur 0.03-0.04 rms (max 0.08-0.11)."""
    w, latent, image_prior, op, noise, y, post_mean, post_var = latent_problem(
        op_name, sigma=0.5 if op_name == "mask" else 0.3
    )
    s = float(latent.schedule.sigma(torch.tensor(t0)))
    cov = image_prior.covariance_matrix()
    smoothed = GaussianPrior.full(
        image_prior.mean, cov + s * s * torch.eye(cov.shape[0], dtype=torch.float64), VPSchedule()
    )
    mode, _ = gaussian_posterior(smoothed, op, y, noise)
    replicates = 8
    out = wavelet_latent(
        WaveletLatentPrior(latent, w),
        op,
        y.repeat_interleave(replicates, 0),
        noise=noise,
        sampler="red_diff",
        steps=2000,
        lam=1 / s,
        weighting="const",
        lr=0.02,
        lr_schedule="cosine",
        t_range=(t0, t0),
        init="tikhonov",
        generator=torch.Generator().manual_seed(1),
    )
    assert out.x.shape == (y.shape[0] * replicates, *IMAGE) and out.samples is None and out.std is None
    average = out.x.view(y.shape[0], replicates, *IMAGE).mean(1)
    sd = post_var.sqrt()
    assert bool((_rms(average - mode, sd) < 0.12).all()), _rms(average - mode, sd)
    assert float(((average - mode) / sd).abs().max()) < 0.3
    assert bool((_rms(average - post_mean, sd) < _rms(mode - post_mean, sd) + 0.12).all())


@pytest.mark.parametrize("op_name", ["mask", "blur"])
def test_smc_in_the_latent_matches_the_image_space_posterior(op_name: str) -> None:
    """SMC particles decoded to images: weighted mean and the per-pixel std *of the decoded particles* against the
    closed-form posterior (tolerances of tests/test_smc.py, 2048 particles, 200 steps; allowed about 0.21 rms for
    the mean and 0.23 for the relative variance). Measured over 3 seeds: mean 0.06-0.08 (mask) and 0.02-0.03
    (blur) posterior std rms, relative variance 0.07-0.09 and 0.04 rms. The std cannot come from the latent std:
    W^T mixes coefficients, so pixel variances need the coefficients' covariances."""
    w, latent, _, op, noise, y, post_mean, post_var = latent_problem(op_name, sigma=0.3, batch=1)
    out = wavelet_latent(
        latent,
        op,
        y,
        noise=noise,
        transform=w,
        sampler="smc",
        particles=2048,
        steps=200,
        batch_size=4096,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.samples is not None and out.samples.shape == (1, 2048, *IMAGE)
    check_moments(out, post_mean, post_var, 2048)
    weights = torch.softmax(out.log_weights, 1)  # type: ignore[arg-type]
    torch.testing.assert_close(out.x, torch.einsum("bk,bk...->b...", weights, out.samples), rtol=1e-10, atol=1e-12)


def test_pinv_init_uses_the_operator_closed_form() -> None:
    """RED-Diff's default start in the latent is W A^+ y (= (A W^T)^+ y): one step at a tiny learning rate
    leaves the decoded estimate at A^+ y."""
    w, latent, _, op, noise, y, *_ = latent_problem("mask", sigma=0.3)
    out = wavelet_latent(
        latent, op, y, noise=noise, transform=w, steps=1, lr=1e-12, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out.x, op.pinv(y), rtol=0, atol=1e-9)
    start = torch.full((2, *IMAGE), 0.25, dtype=torch.float64)
    out = wavelet_latent(latent, op, y, noise=noise, transform=w, init=start, steps=1, lr=1e-12)
    torch.testing.assert_close(out.x, start, rtol=0, atol=1e-9)


def tiny_network_prior(image: tuple[int, ...], wavelet: str = "haar") -> WaveletLatentPrior:
    w = WaveletTransform(image, wavelet)
    config = {
        "spatial_dims": len(image) - 1,
        "in_channels": w.y_shape[0],
        "out_channels": w.y_shape[0],
        "channels": [8, 16],
        "attention_levels": [False, False],
        "norm_num_groups": 8,
        "num_head_channels": 8,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = build_unet(config)
        for p in network.parameters():  # MONAI zero-initialises the output layer; make the prior non-trivial
            torch.nn.init.normal_(p, std=0.05)
    latent = NetworkPrior(network, VPSchedule(), x_shape=w.y_shape, network_config=config)
    return WaveletLatentPrior(latent, w, clip=1.0)


@pytest.mark.parametrize("image", [(1, 16, 16), (1, 8, 8, 8)], ids=["2d", "3d"])
@pytest.mark.parametrize("sampler", ["red_diff", "smc"])
def test_end_to_end_with_a_network_prior(image: tuple[int, ...], sampler: str) -> None:
    """A tiny randomly initialised UNet on Haar latents, 2D and 3D: both samplers run through the composed operator
    and give finite image-space results; callbacks see images; the network is called as the sampler says."""
    prior = tiny_network_prior(image)
    mask = torch.rand(image[1:], generator=torch.Generator().manual_seed(1)) < 0.5
    op = Inpainting(mask)
    noise = GaussianNoise(0.1)
    y = noise.sample(
        op(torch.rand(2, *image, generator=torch.Generator().manual_seed(2)) * 2 - 1),
        generator=torch.Generator().manual_seed(3),
    )
    seen: list[dict] = []
    options = {"steps": 4} if sampler == "red_diff" else {"steps": 4, "particles": 3, "tempering": None}
    prior.reset_nfe()
    out = wavelet_latent(
        prior,
        op,
        y,
        noise=noise,
        sampler=sampler,
        generator=torch.Generator().manual_seed(4),
        callback=seen.append,
        **options,
    )
    assert isinstance(out, Reconstruction) and out.x.shape == (2, *image) and out.x.dtype == torch.float32
    assert bool(torch.isfinite(out.x).all())
    assert len(seen) == 4 and set(CALLBACK_KEYS) <= set(seen[0])
    assert seen[-1]["x"].shape == (2, *image) and seen[-1]["x0_hat"].shape == (2, *image)
    if sampler == "smc":
        assert out.samples is not None and out.samples.shape == (2, 3, *image)
        assert out.std is not None and out.std.shape == (2, *image) and bool((out.std >= 0).all())
        assert seen[-1]["particles"].shape == (2, 3, *image)
        assert prior.nfe == 4  # one batched denoiser call per step
    else:
        assert prior.nfe == 4 and int(out.diagnostics["nfe"]) == 4
    torch.testing.assert_close(out.diagnostics["misfit"][-1], seen[-1]["misfit"])


def test_results_equal_the_inner_sampler_on_the_composed_operator() -> None:
    """Nothing but composition and decoding happens around the inner sampler: same draws, same answer."""
    w, latent, _, op, noise, y, *_ = latent_problem("blur", sigma=0.3)
    from invdiff.operators import Synthesis

    start = torch.zeros(2, *IMAGE, dtype=torch.float64)
    ours = wavelet_latent(
        latent, op, y, noise=noise, transform=w, init=start, steps=20, generator=torch.Generator().manual_seed(7)
    )
    inner = red_diff(
        latent, op @ Synthesis(w), y, noise=noise, init=w(start), steps=20, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(ours.x, w.adjoint(inner.x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.diagnostics["misfit"], inner.diagnostics["misfit"], rtol=0, atol=1e-12)


def test_bad_arguments() -> None:
    w, latent, _, op, noise, y, *_ = latent_problem("mask", sigma=0.3)
    wrapped = WaveletLatentPrior(latent, w)
    with pytest.raises(TypeError, match="not a WaveletLatentPrior; pass the latent transform as transform="):
        wavelet_latent(latent, op, y, noise=noise)
    with pytest.raises(TypeError, match="carries its transform; do not pass transform= as well"):
        wavelet_latent(wrapped, op, y, noise=noise, transform=w)
    with pytest.raises(ValueError, match="sampler must be one of 'red_diff', 'smc' or a function, got 'ddrm'"):
        wavelet_latent(wrapped, op, y, noise=noise, sampler="ddrm")
    other = Inpainting(torch.ones(16, 16, dtype=torch.bool)).double()
    with pytest.raises(
        ValueError, match=r"op.x_shape \(1, 16, 16\) differs from the transform's image shape \(1, 8, 8\)"
    ):
        wavelet_latent(wrapped, other, torch.zeros(1, 1, 16, 16, dtype=torch.float64), noise=noise)
    with pytest.raises(ValueError, match=r"init must be a real tensor of shape \(2, 1, 8, 8\)"):
        wavelet_latent(wrapped, op, y, noise=noise, init=torch.zeros(2, 4, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise.sigma must be > 0"):  # the inner sampler's own checks still apply
        wavelet_latent(wrapped, op, y, noise=GaussianNoise(0.0))
    assert math.isfinite(float(wavelet_latent(wrapped, op, y, noise=noise, steps=2).x.sum()))
