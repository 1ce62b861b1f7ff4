"""NetworkPrior (MONAI DiffusionModelUNet as a Prior), build_unet, Normalisation and the ancestral sampler."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors import GaussianPrior, NetworkPrior, Normalisation, Prior, ancestral_sample, build_unet
from invdiff.schedule import VPSchedule

TINY = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


def tiny_prior(spatial_dims: int = 2, channels: int = 1, prediction: str = "epsilon", seed: int = 0) -> NetworkPrior:
    config = {"spatial_dims": spatial_dims, "in_channels": channels, "out_channels": channels, **TINY}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_unet(config)
        # MONAI zero-initialises the output convolution; randomise it so outputs depend on the input
        for p in net.out.parameters():
            torch.nn.init.normal_(p, std=0.1)
    size = (8,) * spatial_dims
    return NetworkPrior(net, VPSchedule(), x_shape=(channels, *size), normalisation=Normalisation(2.0, -1.0),
                        prediction=prediction, network_config=config)


@pytest.mark.parametrize("spatial_dims,channels", [(2, 1), (2, 2), (3, 1), (3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_denoise_shapes_and_dtypes(spatial_dims: int, channels: int, dtype: torch.dtype) -> None:
    prior = tiny_prior(spatial_dims, channels)
    assert isinstance(prior, Prior)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn((3, *prior.x_shape), generator=g, dtype=dtype)
    t = torch.tensor([0.0, 17.5, 999.0], dtype=torch.float64)  # fractional times are allowed
    x0 = prior.denoise(x_t, t)
    assert x0.shape == x_t.shape and x0.dtype == dtype
    assert torch.isfinite(x0).all()


def test_denoise_is_tweedie_of_the_network_epsilon() -> None:
    """x0_hat = (x_t - sqrt(1 - ab) eps_net) / sqrt(ab), with the network called on float timesteps."""
    prior = tiny_prior()
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn((2, *prior.x_shape), generator=g)
    t = torch.tensor([10.25, 500.0])
    eps = prior.network(x_t, timesteps=t)
    ab = VPSchedule().alpha_bar(t).float().view(-1, 1, 1, 1)
    expected = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    torch.testing.assert_close(prior.denoise(x_t, t), expected, rtol=1e-5, atol=1e-5)
    # fractional t is really used: the output moves between neighbouring integer times
    a, b = prior.denoise(x_t, torch.tensor([10.0, 10.0])), prior.denoise(x_t, torch.tensor([11.0, 11.0]))
    mid = prior.denoise(x_t, torch.tensor([10.5, 10.5]))
    assert not torch.equal(mid, a) and not torch.equal(mid, b)


def test_clip_clamps_the_denoised_estimate() -> None:
    prior = tiny_prior()
    x_t = 50 * torch.randn((2, *prior.x_shape), generator=torch.Generator().manual_seed(8))
    t = torch.tensor([999.0, 990.0])
    raw = prior.denoise(x_t, t)
    assert raw.abs().max() > 1
    prior.clip = 1.0
    torch.testing.assert_close(prior.denoise(x_t, t), raw.clamp(-1, 1))
    with pytest.raises(ValueError, match="clip must be a number > 0 or None, got 0"):
        NetworkPrior(prior.network, VPSchedule(), x_shape=(1, 8, 8), clip=0)


@pytest.mark.parametrize("prediction", ["sample", "v"])
def test_other_parameterisations(prediction: str) -> None:
    prior = tiny_prior(prediction=prediction)
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn((2, *prior.x_shape), generator=g, dtype=torch.float64)
    t = torch.tensor([100.0, 900.0], dtype=torch.float64)
    out = prior.network(x_t.float(), timesteps=t.float()).double()
    if prediction == "sample":
        expected = out
    else:  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v
        ab = VPSchedule().alpha_bar(t).view(-1, 1, 1, 1)
        expected = ab.sqrt() * x_t - (1 - ab).sqrt() * out
    torch.testing.assert_close(prior.denoise(x_t, t), expected, rtol=1e-5, atol=1e-6)


def test_nfe_counts_network_evaluations() -> None:
    prior = tiny_prior()
    x = torch.zeros((4, *prior.x_shape))
    for _ in range(3):
        prior.denoise(x, torch.full((4,), 5.0))
    assert prior.nfe == 3
    prior.reset_nfe()
    ancestral_sample(prior, (2, *prior.x_shape), 7, torch.Generator().manual_seed(0))
    assert prior.nfe == 7


def test_denoise_needs_no_grad_and_leaves_inputs_alone() -> None:
    prior = tiny_prior()
    x = torch.randn((2, *prior.x_shape), generator=torch.Generator().manual_seed(4), requires_grad=True)
    before = x.detach().clone()
    out = prior.denoise(x, torch.tensor([3.0, 4.0]))
    assert torch.equal(x.detach(), before)
    assert torch.isfinite(out).all()


def test_other_spatial_sizes_divisible_by_the_unet_depth() -> None:
    prior = tiny_prior()
    assert prior.denoise(torch.zeros(1, 1, 12, 6), torch.tensor([1.0])).shape == (1, 1, 12, 6)


@pytest.mark.parametrize(
    "x,t,match",
    [
        (torch.zeros(2, 2, 8, 8), torch.zeros(2), r"expects \(B, \*\(1, 8, 8\)\)"),
        (torch.zeros(2, 1, 8, 8, 8), torch.zeros(2), r"expects \(B, \*\(1, 8, 8\)\)"),
        (torch.zeros(2, 1, 9, 8), torch.zeros(2), "divisible by 2"),
        (torch.zeros(2, 1, 8, 8), torch.zeros(3), r"t must have shape \(B,\)"),
    ],
)
def test_denoise_rejects_bad_input(x: torch.Tensor, t: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_prior().denoise(x, t)


def test_denoise_rejects_complex_input() -> None:
    with pytest.raises(TypeError, match="two channels"):
        tiny_prior().denoise(torch.zeros(1, 1, 8, 8, dtype=torch.complex64), torch.zeros(1))


def test_constructor_errors() -> None:
    net = build_unet({"spatial_dims": 2, **TINY})
    with pytest.raises(TypeError, match="network must be a torch.nn.Module"):
        NetworkPrior(object(), VPSchedule(), x_shape=(1, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schedule must be a VPSchedule"):
        NetworkPrior(net, "linear", x_shape=(1, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x_shape must be"):
        NetworkPrior(net, VPSchedule(), x_shape=(8, 8))
    with pytest.raises(ValueError, match="prediction must be"):
        NetworkPrior(net, VPSchedule(), x_shape=(1, 8, 8), prediction="score")  # type: ignore[arg-type]


def test_build_unet_config_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['chanels'\]"):
        build_unet({"chanels": [8, 16]})
    with pytest.raises(ValueError, match="with_conditioning=True is not supported"):
        build_unet({"with_conditioning": True, "cross_attention_dim": 8})
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        build_unet({"spatial_dims": 1})
    with pytest.raises(ValueError, match="is invalid"):
        build_unet({"channels": [8, 16], "attention_levels": [False]})  # MONAI's own check, rewrapped


def test_build_unet_defaults_are_the_small_cpu_unet() -> None:
    net = build_unet({})
    assert sum(p.numel() for p in net.parameters()) == 1_062_497  # research/MONAI.md section 2


def test_normalisation_round_trip_and_errors() -> None:
    n = Normalisation(2.0, -1.0)
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(n.forward(u), 2 * u - 1)
    torch.testing.assert_close(n.inverse(n.forward(u)), u)
    assert Normalisation.from_config(n.to_config()) == n
    with pytest.raises(ValueError, match="nonzero scale"):
        Normalisation(0.0, 0.0)
    with pytest.raises(TypeError, match="scale must be a finite number"):
        Normalisation("2", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown key"):
        Normalisation.from_config({"scale": 1.0, "shift": 0.0})


def test_ancestral_sampler_matches_a_gaussian_prior(global_rng_guard: None) -> None:
    """With the exact Gaussian denoiser and steps = T, DDPM ancestral sampling draws from N(mu, diag(v))."""
    var = torch.tensor([[[0.25, 0.04], [1.0, 0.01]]], dtype=torch.float64)
    prior = GaussianPrior.diagonal(torch.full((1, 2, 2), 0.3, dtype=torch.float64), var, VPSchedule())
    n = 4000
    x = ancestral_sample(prior, (n, 1, 2, 2), 1000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (x.mean(0) - 0.3).abs().le(4 * (var / n).sqrt()).all()
    assert ((x.var(0) / var) - 1).abs().max() < 0.1  # sampling error of a variance at n = 4000 is ~2 %


def test_ancestral_sampler_is_reproducible_and_validates() -> None:
    prior = tiny_prior()
    a = ancestral_sample(prior, (2, *prior.x_shape), 5, torch.Generator().manual_seed(7), clip=1.0)
    b = ancestral_sample(prior, (2, *prior.x_shape), 5, torch.Generator().manual_seed(7), clip=1.0)
    assert torch.equal(a, b) and a.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\], got 0"):
        ancestral_sample(prior, (1, *prior.x_shape), 0)
    with pytest.raises(ValueError, match="clip must be > 0"):
        ancestral_sample(prior, (1, *prior.x_shape), 2, clip=0.0)
