"""Contract-battery cases for the blur operators.

Each factory draws its kernel from a generator seeded with the battery's seed, so seeds 0 and 1
give different operators (the state_dict round trip then has something to prove).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators import Operator
from invdiff.operators.blur import Blur, box_kernel, gaussian_kernel, motion_kernel


def _uniform(g: torch.Generator, low: float, high: float, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in low + (high - low) * torch.rand(n, dtype=torch.float64, generator=g))


def gaussian_2d(seed: int) -> Operator:
    g = torch.Generator().manual_seed(seed)
    return Blur(gaussian_kernel(_uniform(g, 0.8, 1.6, 2), size=7), (1, 32, 32))


def motion_2d(seed: int) -> Operator:
    return Blur(motion_kernel(9, torch.Generator().manual_seed(seed)), (1, 32, 32))


def psf_odd_image(seed: int) -> Operator:
    """A random non-symmetric user PSF with an even axis (5 x 4) on an odd 37 x 31 image."""
    g = torch.Generator().manual_seed(seed)
    return Blur(torch.rand(5, 4, generator=g) + 0.1, (1, 37, 31))


def gaussian_3d(seed: int) -> Operator:
    g = torch.Generator().manual_seed(seed)
    return Blur(gaussian_kernel(_uniform(g, 0.6, 1.2, 3), size=(3, 5, 5), ndim=3), (1, 8, 10, 12))


def box_two_channels(seed: int) -> Operator:
    """Box kernel with exact spectral zeros on a 24 x 24 grid (null space; exercises truncation)."""
    return Blur(box_kernel((3, 4)), (2, 24, 24))  # no random parameters: the seed is unused


CASES: dict[str, Callable[[int], Operator]] = {
    "gaussian_2d": gaussian_2d,
    "motion_2d": motion_2d,
    "psf_37x31": psf_odd_image,
    "gaussian_3d": gaussian_3d,
    "box_2ch": box_two_channels,
}
