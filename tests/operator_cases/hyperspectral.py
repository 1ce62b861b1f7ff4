"""Contract-battery cases for the hyperspectral operators on cubes ``(bands, H, W)``.

Each factory takes a seed (random SRFs and masks); sizes keep ``numel(x) <= 1600`` except
the one odd-size 37 x 31 case, whose dense opnorm reference is skipped by the battery.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators.base import Operator
from invdiff.operators.hyperspectral import (
    BandCompletion,
    HyperspectralDenoising,
    HyperspectralSuperResolution,
    PixelCompletion,
    SpectralResponse,
    camera_rgb_srf,
    cie_xyz_srf,
    gaussian_srf,
)
from invdiff.operators.masking import random_pixel_mask


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _wavelengths(bands: int) -> torch.Tensor:
    return torch.linspace(400.0, 700.0, bands)


CASES: dict[str, Callable[[int], Operator]] = {
    "srf_camera_rgb_16b": lambda seed: SpectralResponse(camera_rgb_srf(_wavelengths(16)).float(), (8, 8)),
    "srf_cie_xyz_odd_37x31": lambda seed: SpectralResponse(cie_xyz_srf(_wavelengths(6)).float(), (37, 31)),
    "srf_multispectral_5ch": lambda seed: SpectralResponse(
        gaussian_srf(_wavelengths(12), [430, 490, 550, 610, 670], 40).float(), (6, 7)
    ),
    "srf_random_more_channels_than_bands": lambda seed: SpectralResponse(torch.randn(6, 4, generator=_g(seed)), (5, 6)),
    "sr_f2_sigma1_8b": lambda seed: HyperspectralSuperResolution((8, 12, 12), 2, 1.0),
    "sr_f3_default_sigma_4b_odd": lambda seed: HyperspectralSuperResolution((4, 15, 9), 3),
    "sr_f4_periodic": lambda seed: HyperspectralSuperResolution((3, 16, 16), 4, 1.5, boundary="periodic"),
    "band_completion": lambda seed: BandCompletion((10, 8, 9), [1, 4, 5]),
    "pixel_completion_pixels": lambda seed: PixelCompletion((6, 9, 8), random_pixel_mask((9, 8), 0.3, generator=_g(seed))),
    "pixel_completion_voxels": lambda seed: PixelCompletion(
        (5, 7, 9), random_pixel_mask((5, 7, 9), 0.5, generator=_g(seed))
    ),
    "denoising_odd_37x31": lambda seed: HyperspectralDenoising((1, 37, 31)),
    "denoising_4b": lambda seed: HyperspectralDenoising((4, 8, 6)),
}
