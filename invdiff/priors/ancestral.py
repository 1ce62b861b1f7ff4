"""Unconditional ancestral (DDPM) sampling from a prior: for sample grids and sanity checks.

For descending times t > s (``schedule.timesteps(steps)``, strided when ``steps < T``), with
``a = ab_t / ab_s`` and ``x0_hat = prior.denoise(x_t, t)``, draw from the DDPM posterior (Ho et al. 2020, eq. 7)

    x_s = sqrt(ab_s) (1 - a) / (1 - ab_t) * x0_hat + sqrt(a) (1 - ab_s) / (1 - ab_t) * x_t
          + sqrt((1 - ab_s) / (1 - ab_t) * (1 - a)) * z,        z ~ N(0, I),

and return ``x0_hat`` at the last time (t = 0). With ``steps = T`` this is exactly DDPM's sampler.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Prior

__all__ = ["ancestral_sample"]


def ancestral_sample(
    prior: Prior,
    shape: Sequence[int],
    steps: int,
    generator: torch.Generator | None = None,
    *,
    clip: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``shape[0]`` samples from the prior by ancestral sampling (normalised space).

    Args:
        prior: any :class:`~invdiff.priors.base.Prior`.
        shape: (B, *x_shape).
        steps: number of denoiser calls, 1 <= steps <= T.
        generator: source of all randomness (its device decides where noise is drawn).
        clip: if set, clamp ``x0_hat`` to [-clip, clip] at each step (1.0 for data normalised to [-1, 1]).
        device: where to sample; default: the generator's device.
        dtype: sampling dtype.

    Returns:
        (B, *x_shape) samples.
    """
    T = prior.schedule.T
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    shape = tuple(int(s) for s in shape)
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else torch.device("cpu"))
    noise_dev = generator.device if generator is not None else dev

    def randn() -> Tensor:
        return torch.randn(shape, generator=generator, device=noise_dev, dtype=dtype).to(dev)

    times = prior.schedule.timesteps(steps).tolist()
    x = randn()
    x0_hat = x
    for i, t in enumerate(times):
        tt = torch.full((shape[0],), float(t), device=dev, dtype=torch.float64)
        x0_hat = prior.denoise(x, tt)
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        if i == len(times) - 1:
            break
        ab_t = float(prior.schedule.alpha_bar(t))
        ab_s = float(prior.schedule.alpha_bar(times[i + 1]))
        a = ab_t / ab_s
        c0 = ab_s**0.5 * (1 - a) / (1 - ab_t)
        ct = a**0.5 * (1 - ab_s) / (1 - ab_t)
        var = (1 - ab_s) / (1 - ab_t) * (1 - a)
        x = c0 * x0_hat + ct * x + var**0.5 * randn()
    return x0_hat
