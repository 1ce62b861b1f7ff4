"""Contract-battery cases for cropping, the real-image embedding and compositions across families."""

from __future__ import annotations

import torch

from invdiff.operators import Blur, BoxDownsampling, CenterCrop, Inpainting, gaussian_kernel, random_pixel_mask
from invdiff.operators.embedding import RealAsComplexChannels
from invdiff.operators.kspace_masks import random_column_mask
from invdiff.operators.mri import SinglecoilMRI


def _real_image_mri(seed: int) -> object:
    g = torch.Generator().manual_seed(seed)
    mask = random_column_mask((37, 31), 4, 0.1, generator=g)
    return SinglecoilMRI(mask, complex_channels=True) @ RealAsComplexChannels((37, 31))


def _blur_then_downsample(seed: int) -> object:
    return BoxDownsampling((1, 24, 24), 2) @ Blur(gaussian_kernel(1.0 + 0.3 * seed, size=7), (1, 24, 24))


def _mask_after_crop(seed: int) -> object:
    g = torch.Generator().manual_seed(seed)
    return Inpainting(random_pixel_mask((37, 31), 0.5, generator=g)) @ CenterCrop((1, 40, 32), (37, 31))


CASES = {
    "crop_2d_odd": lambda seed: CenterCrop((2, 40, 36), (37, 31)),
    "crop_3d_complex": lambda seed: CenterCrop((1, 8, 10, 12), (5, 10, 9), is_complex=True),
    "real_as_complex_channels": lambda seed: RealAsComplexChannels((9, 7)),
    "real_image_mri_37x31": _real_image_mri,
    "blur_then_downsample": _blur_then_downsample,
    "mask_after_crop": _mask_after_crop,
}
