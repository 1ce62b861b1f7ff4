"""Contract-battery cases for the MRI operators (single-/multi-coil, complex/two-channel, 2D/3D).

Sizes are small (x numel <= ~1500) so the dense operator-norm reference stays cheap; the seed
drives the random masks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators.base import Operator
from invdiff.operators.coil_maps import birdcage_maps
from invdiff.operators.kspace_masks import equispaced_column_mask, poisson_disc_mask, random_column_mask
from invdiff.operators.mri import MulticoilMRI, SinglecoilMRI


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _singlecoil_random(seed: int) -> Operator:
    return SinglecoilMRI(random_column_mask((24, 20), 4, 0.08, generator=_g(seed)))


def _singlecoil_channels_equispaced(seed: int) -> Operator:
    return SinglecoilMRI(equispaced_column_mask((16, 20), 4, 0.1, generator=_g(seed)), complex_channels=True)


def _singlecoil_poisson(seed: int) -> Operator:
    return SinglecoilMRI(poisson_disc_mask((24, 24), 3, 6, generator=_g(seed)))


def _singlecoil_channels_odd_37x31(seed: int) -> Operator:
    # A (W,) column mask broadcast to the odd grid through image_shape. x numel 2294 > 1600, so the
    # battery skips its dense-matrix norm for this case (a dense complex SVD of that size is slow).
    return SinglecoilMRI(
        random_column_mask(31, 3, 0.1, generator=_g(seed)), image_shape=(37, 31), complex_channels=True
    )


def _singlecoil_random_3d(seed: int) -> Operator:
    return SinglecoilMRI(random_column_mask((6, 5, 8), 2, 0.25, generator=_g(seed)))


def _singlecoil_channels_poisson_3d(seed: int) -> Operator:
    return SinglecoilMRI(poisson_disc_mask((12, 2, 14), 2, 2, generator=_g(seed)), complex_channels=True)


# Multi-coil cases use 2D Poisson / equispaced masks: a random column mask can leave runs of
# missing columns that 4 smooth coils cannot resolve, and the CG pinv of such an ill-conditioned
# SENSE operator (smallest singular value ~1e-6 at 16x20, R=2) misses the battery's 1e-6 tolerance.
def _multicoil_poisson(seed: int) -> Operator:
    return MulticoilMRI(poisson_disc_mask((16, 20), 2.5, 4, generator=_g(seed)), birdcage_maps((16, 20), 4))


def _multicoil_channels_odd(seed: int) -> Operator:
    mask = equispaced_column_mask((15, 13), 2, 0.2, variant="spacing", generator=_g(seed))
    return MulticoilMRI(mask, birdcage_maps((15, 13), 4, radius=1.2), complex_channels=True)


def _multicoil_poisson_3d(seed: int) -> Operator:
    return MulticoilMRI(
        poisson_disc_mask((10, 3, 12), 2, 4, generator=_g(seed)), birdcage_maps((10, 3, 12), 4, rings=2)
    )


CASES: dict[str, Callable[[int], Operator]] = {
    "singlecoil_random_24x20": _singlecoil_random,
    "singlecoil_channels_equispaced_16x20": _singlecoil_channels_equispaced,
    "singlecoil_poisson_24x24": _singlecoil_poisson,
    "singlecoil_channels_odd_37x31": _singlecoil_channels_odd_37x31,
    "singlecoil_random_3d_6x5x8": _singlecoil_random_3d,
    "singlecoil_channels_poisson_3d_12x2x14": _singlecoil_channels_poisson_3d,
    "multicoil4_poisson_16x20": _multicoil_poisson,
    "multicoil4_channels_odd_15x13": _multicoil_channels_odd,
    "multicoil4_poisson_3d_10x3x12": _multicoil_poisson_3d,
}
