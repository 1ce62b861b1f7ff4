"""VP schedule: identities, agreement with MONAI's schedules, interpolation, inverses and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.schedule import VPSchedule

KINDS = ["linear", "cosine"]


@pytest.fixture(params=KINDS)
def schedule(request: pytest.FixtureRequest) -> VPSchedule:
    return VPSchedule(request.param)


# ---- round trips between x0, eps and score ------------------------------------------------------
def test_x0_eps_score_round_trips(schedule: VPSchedule) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 250.5, 700.0, 998.25], dtype=torch.float64)
    x_t = schedule.add_noise(x0, eps, t)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, eps, t), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, x0, t), eps, rtol=0, atol=1e-9)
    # score = -eps / sqrt(1 - ab), both from eps and from x0
    ab = schedule.alpha_bar(t).view(-1, 1, 1, 1)
    expected = -eps / (1 - ab).sqrt()
    torch.testing.assert_close(schedule.score_from_eps(x_t, eps, t), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(schedule.score_from_x0(x_t, x0, t), expected, rtol=1e-9, atol=1e-9)
    # v-parametrisation round trip
    v = schedule.v_from_eps(x_t, eps, t)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(schedule.eps_from_v(x_t, v, t), eps, rtol=1e-9, atol=1e-9)


def test_add_noise_is_variance_preserving(schedule: VPSchedule) -> None:
    # Unit-variance x0 and eps: Var(x_t) = ab + (1 - ab) = 1 exactly, for every t.
    t = torch.tensor([0.0, 400.0, 999.0], dtype=torch.float64)
    ab = schedule.alpha_bar(t)
    ones = torch.ones(3, 1)
    torch.testing.assert_close(schedule.add_noise(ones, ones * 0, t) ** 2 + schedule.add_noise(ones * 0, ones, t) ** 2,
                               torch.ones(3, 1), rtol=0, atol=1e-6)
    assert bool((ab > 0).all() and (ab < 1).all())


def test_conversions_follow_input_dtype(schedule: VPSchedule) -> None:
    x = torch.ones(2, 3, dtype=torch.float32)
    t = torch.tensor([3.0, 500.0])
    for fn in (schedule.x0_from_eps, schedule.eps_from_x0, schedule.score_from_x0, schedule.score_from_eps):
        assert fn(x, x, t).dtype == torch.float32
    assert schedule.add_noise(x.double(), x.double(), t).dtype == torch.float64


# ---- alpha_bar values ----------------------------------------------------------------------------
def test_alpha_bar_monotone_and_endpoints(schedule: VPSchedule) -> None:
    ab = schedule.alpha_bar(torch.arange(schedule.T, dtype=torch.float64))
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must be strictly decreasing"
    assert 0 < float(ab[-1]) < 1e-4  # essentially pure noise at t = T-1
    torch.testing.assert_close(ab, schedule.alphas_cumprod, rtol=1e-12, atol=0)
    torch.testing.assert_close(1 - schedule.betas, ab / torch.cat([ab.new_ones(1), ab[:-1]]), rtol=1e-12, atol=0)


def test_alpha_bar_zero_is_one_minus_beta_start() -> None:
    schedule = VPSchedule("linear", beta_start=1e-4, beta_end=0.02)
    assert abs(float(schedule.alpha_bar(0.0)) - (1 - 1e-4)) < 1e-12
    # cosine: ab(0) = f(1/T)/f(0) = 1 - beta_0, with beta_0 ~ 4e-5 for T = 1000
    cos = VPSchedule("cosine")
    assert abs(float(cos.alpha_bar(0.0)) - (1 - float(cos.betas[0]))) < 1e-12
    assert 1e-5 < float(cos.betas[0]) < 1e-4


def test_linear_betas_match_monai() -> None:
    from monai.networks.schedulers import DDPMScheduler

    ours = VPSchedule("linear", T=1000)
    ref = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    # MONAI builds the betas in float32: |error| <= half an ulp of 0.02, i.e. 2**-30 < 1e-9.
    torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=0, atol=2e-9)
    # Cumulative products of 1000 float32 factors drift by up to ~1000 * 2**-24 relative.
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-6, atol=0)


def test_cosine_betas_match_monai() -> None:
    from monai.networks.schedulers import DDPMScheduler, NoiseSchedules

    ours = VPSchedule("cosine", T=1000)
    # MONAI's cosine function builds its grid with the default dtype: evaluated in float64 it is an
    # independent float64 reference (same equation, Nichol & Dhariwal 2021 with s = 0.008, clip 0.999).
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        betas, _, alphas_cumprod = NoiseSchedules["cosine"](1000)
    finally:
        torch.set_default_dtype(old)
    assert betas.dtype == torch.float64
    torch.testing.assert_close(ours.betas, betas, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.alphas_cumprod, alphas_cumprod, rtol=1e-12, atol=0)
    # The float32 scheduler object agrees to float32 accuracy. The worst betas are near t = T-1, where
    # cos^2 of an angle within ~1.5e-3 of pi/2 loses ~1e3 x float32's 6e-8 relative accuracy (measured 3.1e-5).
    ref = DDPMScheduler(num_train_timesteps=1000, schedule="cosine")
    torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.double(), rtol=2e-4, atol=1e-9)
    assert float(ours.betas.max()) == pytest.approx(0.999)


# ---- fractional t, beta, sigma and its inverse --------------------------------------------------
def test_fractional_t_interpolates_log_alpha_bar(schedule: VPSchedule) -> None:
    k = torch.tensor([0, 10, 500, 997], dtype=torch.float64)
    frac = torch.tensor([0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    lo, hi = schedule.alpha_bar(k).log(), schedule.alpha_bar(k + 1).log()
    expected = torch.exp(lo + frac * (hi - lo))
    torch.testing.assert_close(schedule.alpha_bar(k + frac), expected, rtol=1e-12, atol=0)
    # between its neighbours and continuous at the integers
    ab = schedule.alpha_bar(k + frac)
    assert bool(((ab < lo.exp()) & (ab > hi.exp())).all())
    torch.testing.assert_close(schedule.alpha_bar(k + 1 - 1e-9), schedule.alpha_bar(k + 1), rtol=1e-8, atol=0)
    # a scalar time and the last time work
    assert float(schedule.alpha_bar(schedule.T - 1)) == pytest.approx(float(schedule.alphas_cumprod[-1]), rel=1e-12)


def test_beta_is_minus_derivative_of_log_alpha_bar(schedule: VPSchedule) -> None:
    t = torch.tensor([0.5, 3.5, 100.2, 600.0, 998.5, 999.0], dtype=torch.float64)
    h = 1e-4  # a backward difference: beta(t) is the rate of the interval a reverse step from t crosses
    numeric = -(schedule.alpha_bar(t).log() - schedule.alpha_bar(t - h).log()) / h
    torch.testing.assert_close(schedule.beta(t), numeric, rtol=1e-6, atol=1e-9)
    k = torch.tensor([1, 500, 999])
    torch.testing.assert_close(schedule.beta(k.double()), -torch.log1p(-schedule.betas[k]), rtol=1e-10, atol=0)


def test_sigma_and_time_of_sigma_invert(schedule: VPSchedule) -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 17.3, 250.0, 640.75, 998.9, 999.0], dtype=torch.float64)
    sigma = schedule.sigma(t)
    ab = schedule.alpha_bar(t)
    torch.testing.assert_close(sigma, ((1 - ab) / ab).sqrt(), rtol=1e-12, atol=0)
    assert bool((sigma[1:] > sigma[:-1]).all())
    torch.testing.assert_close(schedule.time_of_sigma(sigma), t, rtol=0, atol=1e-6)
    # VE view: x_VE = x_VP / sqrt(ab) has noise level sigma
    assert float(schedule.sigma(t[3]) ** 2) == pytest.approx(float((1 - ab[3]) / ab[3]), rel=1e-12)


def test_time_of_sigma_clamps_outside_the_range(schedule: VPSchedule) -> None:
    lo, hi = schedule.sigma(0.0), schedule.sigma(schedule.T - 1.0)
    assert float(schedule.time_of_sigma(lo * 0.5)) == 0.0
    assert float(schedule.time_of_sigma(hi * 2)) == schedule.T - 1


def test_timesteps_descending_integers(schedule: VPSchedule) -> None:
    ts = schedule.timesteps(50)
    assert ts.shape == (50,) and ts.dtype == torch.float64
    assert float(ts[0]) == schedule.T - 1 and float(ts[-1]) == 0.0
    assert bool((ts[1:] < ts[:-1]).all())
    torch.testing.assert_close(ts, ts.round())
    assert schedule.timesteps(1).tolist() == [schedule.T - 1]


def test_small_T_and_custom_betas() -> None:
    s = VPSchedule("linear", T=2, beta_start=0.1, beta_end=0.2)
    torch.testing.assert_close(s.alphas_cumprod, torch.tensor([0.9, 0.9 * 0.8], dtype=torch.float64))
    assert float(s.alpha_bar(0.5)) == pytest.approx(math.sqrt(0.9 * 0.72), rel=1e-12)


def test_to_config_round_trip() -> None:
    s = VPSchedule("cosine", T=500)
    assert VPSchedule(**s.to_config()) == s


# ---- bad input --------------------------------------------------------------------------------------
def test_bad_kind() -> None:
    with pytest.raises(ValueError, match="kind must be 'linear' or 'cosine', got 'quadratic'"):
        VPSchedule("quadratic")  # type: ignore[arg-type]


@pytest.mark.parametrize("T", [0, 1, -5, 10.0])
def test_bad_T(T: object) -> None:
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        VPSchedule("linear", T=T)  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "end"), [(0.0, 0.02), (0.02, 0.01), (1e-4, 1.0), (-1e-4, 0.02)])
def test_bad_betas(start: float, end: float) -> None:
    with pytest.raises(ValueError, match="need 0 < beta_start < beta_end < 1"):
        VPSchedule("linear", beta_start=start, beta_end=end)


@pytest.mark.parametrize("t", [-0.5, 999.5, 1e6])
def test_t_out_of_range(schedule: VPSchedule, t: float) -> None:
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        schedule.alpha_bar(torch.tensor([1.0, t]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        schedule.sigma(t)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, 1001])
def test_bad_steps(schedule: VPSchedule, steps: object) -> None:
    with pytest.raises(ValueError, match="steps must be an integer between 1 and T=1000"):
        schedule.timesteps(steps)  # type: ignore[arg-type]


def test_nan_t_is_rejected(schedule: VPSchedule) -> None:
    with pytest.raises(ValueError, match="t"):
        schedule.alpha_bar(torch.tensor([float("nan")]))


def test_beta_out_of_range_is_rejected(schedule: VPSchedule) -> None:
    with pytest.raises(ValueError, match="t"):
        schedule.beta(-5.0)
