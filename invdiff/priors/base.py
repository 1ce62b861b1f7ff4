"""The ``Prior`` protocol every sampler sees.

A prior is a denoiser on the VP schedule: given a noisy ``x_t`` (batched, ``(B, *x_shape)``)
and times ``t`` of shape ``(B,)`` it returns the posterior mean ``E[x0 | x_t]``. The noise
prediction and the score follow from it through the schedule (``invdiff.schedule``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..schedule import VPSchedule

__all__ = ["Prior", "eps", "score"]


@runtime_checkable
class Prior(Protocol):
    schedule: VPSchedule
    x_shape: tuple[int, ...]  # per-item shape, e.g. (1, 64, 64); (2, H, W) for complex as two channels

    def denoise(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``E[x0 | x_t]`` for ``x_t`` of shape ``(B, *x_shape)`` and ``t`` of shape ``(B,)``."""
        ...


def eps(prior: Prior, x_t: Tensor, t: Tensor) -> Tensor:
    """Noise prediction of a prior: ``(x_t - sqrt(ab) x0_hat) / sqrt(1 - ab)``."""
    return prior.schedule.eps_from_x0(x_t, prior.denoise(x_t, t), t)


def score(prior: Prior, x_t: Tensor, t: Tensor) -> Tensor:
    """Score ``grad log p_t(x_t)`` of a prior."""
    return prior.schedule.score_from_x0(x_t, prior.denoise(x_t, t), t)
