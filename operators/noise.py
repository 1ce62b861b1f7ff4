"""Measurement noise models, kept separate from the (noiseless) operators.

A measurement is simulated explicitly: ``y = noise.sample(op(x), generator=g)``.
``nll(y, y_pred)`` is the negative log-likelihood per batch item, **summed** over entries
(constants dropped), shape ``(B,)``.

Complex convention: for complex measurements ``sigma`` is the standard deviation of each of
the real and imaginary parts (circular complex Gaussian with variance ``2 sigma^2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GaussianNoise", "PoissonNoise", "RicianNoise"]


def _check_nonnegative(name: str, value: float, owner: str, *, strict: bool = False) -> None:
    ok = value > 0 if strict else value >= 0
    if not isinstance(value, (int, float)) or not ok or not math.isfinite(value):  # also rejects NaN
        expected = "a finite number > 0" if strict else "a finite number >= 0"
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise ``y = A x + sigma n``."""

    sigma: float

    def __post_init__(self) -> None:
        _check_nonnegative("sigma", self.sigma, "GaussianNoise")

    def sample(self, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.sigma == 0:
            return y.clone()
        noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
        # torch.randn on a complex dtype draws each part with variance 1/2.
        scale = self.sigma * (math.sqrt(2.0) if y.is_complex() else 1.0)
        return y + scale * noise

    def nll(self, y: Tensor, y_pred: Tensor) -> Tensor:
        if self.sigma == 0:
            raise ValueError("GaussianNoise: the likelihood of sigma=0 is degenerate; use sigma > 0")
        return 0.5 * (y - y_pred).abs().pow(2).flatten(1).sum(1) / self.sigma**2

    def grad_nll(self, residual: Tensor) -> Tensor:
        """d nll / d y_pred for ``residual = y_pred - y`` (the same convention for complex)."""
        return residual / self.sigma**2


@dataclass(frozen=True)
class PoissonNoise:
    """Photon-counting noise: ``y = Poisson(gain * A x) / gain`` (``A x >= 0``)."""

    gain: float = 1.0

    def __post_init__(self) -> None:
        _check_nonnegative("gain", self.gain, "PoissonNoise", strict=True)

    def sample(self, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if y.is_complex() or bool((y < 0).any()):
            raise ValueError("PoissonNoise: y must be real and non-negative (photon rates)")
        return torch.poisson(y * self.gain, generator=generator) / self.gain

    def nll(self, y: Tensor, y_pred: Tensor) -> Tensor:
        rate = (y_pred * self.gain).clamp_min(1e-12)
        counts = y * self.gain
        return (rate - counts * rate.log()).flatten(1).sum(1)


@dataclass(frozen=True)
class RicianNoise:
    """Magnitude of a complex signal in complex Gaussian noise: ``y = |A x + sigma (n1 + i n2)|``.

    This is the noise of magnitude MR images; ``A x`` is real and non-negative (the true magnitude).
    """

    sigma: float

    def __post_init__(self) -> None:
        _check_nonnegative("sigma", self.sigma, "RicianNoise", strict=True)

    def sample(self, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if y.is_complex():
            raise ValueError("RicianNoise: y must be a real magnitude image")
        n1 = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
        n2 = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
        return torch.sqrt((y + self.sigma * n1) ** 2 + (self.sigma * n2) ** 2)

    def nll(self, y: Tensor, y_pred: Tensor) -> Tensor:
        s2 = self.sigma**2
        z = (y * y_pred / s2).clamp_min(0)
        # log I0(z) = log(i0e(z)) + z, stable for large z.
        log_i0 = torch.log(torch.special.i0e(z)) + z
        logp = torch.log(y.clamp_min(1e-12) / s2) - (y**2 + y_pred**2) / (2 * s2) + log_i0
        return -logp.flatten(1).sum(1)
