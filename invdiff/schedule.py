"""The variance-preserving (VP / DDPM) noise schedule: all schedule maths lives here.

Forward process ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` with ``ab_t = alpha_bar(t)``, for
integer or fractional ``t`` in ``[0, T-1]`` (fractional times interpolate ``log ab`` linearly).

Conversions (Ho et al. 2020; Song et al. 2021):
    x0_hat = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab)         (Tweedie)
    eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab)
    score   = -eps_hat / sqrt(1 - ab) = (sqrt(ab) x0_hat - x_t) / (1 - ab)
VE view: sigma(t) = sqrt((1 - ab) / ab), x_VE = x_VP / sqrt(ab).

MONAI's schedulers give the same beta values (linear: ``linear_beta``; cosine: Nichol & Dhariwal);
their ``step()`` is not used for posterior sampling (see research/MONAI.md).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = ["VPSchedule"]

ScheduleKind = Literal["linear", "cosine"]


@dataclass(frozen=True)
class VPSchedule:
    """A discrete VP schedule with ``T`` steps.

    Args:
        kind: ``"linear"`` (beta from ``beta_start`` to ``beta_end``, DDPM) or ``"cosine"``
            (Nichol & Dhariwal 2021, s = 0.008, betas clipped at 0.999).
        T: number of diffusion steps.
    """

    kind: ScheduleKind = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    alphas_cumprod: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"VPSchedule: kind must be 'linear' or 'cosine', got {self.kind!r}")
        if isinstance(self.T, bool) or not isinstance(self.T, numbers.Integral) or self.T < 2:
            raise ValueError(f"VPSchedule: T must be an integer >= 2, got {self.T!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(
                f"VPSchedule: need 0 < beta_start < beta_end < 1, got beta_start={self.beta_start}, beta_end={self.beta_end}"
            )
        if self.kind == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        else:
            steps = torch.arange(self.T + 1, dtype=torch.float64) / self.T
            f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1 - betas, dim=0))

    # ---- schedule values ------------------------------------------------------------------
    @property
    def betas(self) -> Tensor:
        ab = self.alphas_cumprod
        return 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """``ab(t)`` for integer or fractional ``t`` in [0, T-1] (float64 where computed)."""
        t = self._check_time(t)
        log_ab = self.alphas_cumprod.to(t.device).log()
        lo = t.floor().long().clamp(max=self.T - 2)
        frac = t - lo
        return torch.exp(log_ab[lo] * (1 - frac) + log_ab[lo + 1] * frac)

    def beta(self, t: Tensor | float) -> Tensor:
        """The continuous-time rate ``beta(t) = -d log ab / dt`` (per unit of t), piecewise constant.

        ``t`` in (k-1, k] uses the interval below it, so ``beta(k) = -log(1 - betas[k])`` ≈ ``betas[k]``:
        a reverse step from ``t`` down to ``t - h`` (h <= 1) sees the rate of the interval it crosses.
        """
        t = self._check_time(t)
        log_ab = self.alphas_cumprod.to(t.device).log()
        hi = t.ceil().long().clamp(1, self.T - 1)
        return -(log_ab[hi] - log_ab[hi - 1])

    def _check_time(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool((~torch.isfinite(t) | (t < 0) | (t > self.T - 1)).any()):
            raise ValueError(f"t must lie in [0, {self.T - 1}], got values in [{float(t.min())}, {float(t.max())}]")
        return t

    def sigma(self, t: Tensor | float) -> Tensor:
        """VE noise level ``sqrt((1 - ab) / ab)`` = 1/sqrt(SNR)."""
        ab = self.alpha_bar(t)
        return ((1 - ab) / ab).sqrt()

    def time_of_sigma(self, sigma: Tensor | float) -> Tensor:
        """Inverse of ``sigma(t)`` (fractional t), clamped to [0, T-1]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        target = -torch.log1p(sigma**2)  # log ab
        log_ab = self.alphas_cumprod.to(sigma.device).log()
        idx = torch.searchsorted(-log_ab, -target).clamp(1, self.T - 1)
        lo, hi = log_ab[idx - 1], log_ab[idx]
        frac = ((target - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1 + frac).clamp(0, self.T - 1)

    def timesteps(self, steps: int) -> Tensor:
        """``steps`` integer times, descending from T-1 to 0, evenly spaced (float64)."""
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an integer between 1 and T={self.T}, got {steps!r}")
        steps = int(steps)
        return torch.linspace(self.T - 1, 0, steps, dtype=torch.float64).round()

    # ---- conversions ----------------------------------------------------------------------
    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def x0_from_eps(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def eps_from_x0(self, x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def score_from_eps(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x_t)
        return -eps / (1 - ab).sqrt()

    def score_from_x0(self, x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x_t)
        return (ab.sqrt() * x0 - x_t) / (1 - ab)

    def v_from_eps(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Velocity target ``v = sqrt(ab) eps - sqrt(1-ab) x0`` (Salimans & Ho 2022)."""
        ab = _expand(self.alpha_bar(t), x_t)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    def eps_from_v(self, x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
        ab = _expand(self.alpha_bar(t), x_t)
        return (1 - ab).sqrt() * x_t + ab.sqrt() * v

    def to_config(self) -> dict[str, object]:
        return {"kind": self.kind, "T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}


def _expand(ab: Tensor, like: Tensor) -> Tensor:
    """Broadcast a (B,) or scalar schedule value over ``like`` in ``like``'s real dtype."""
    real = like.real.dtype if like.is_complex() else like.dtype
    ab = ab.to(device=like.device, dtype=real)
    return ab.view(-1, *([1] * (like.ndim - 1))) if ab.ndim == 1 else ab
