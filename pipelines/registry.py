"""The name -> object tables of the CLI and the bundle: operators (as builders) and samplers.

A new sampler plugs in with one entry in ``SAMPLERS``; a new operator with one builder here.
Builders take the image shape ``(C, *spatial)`` of one slice or volume, a generator for their
random parameters, and keyword-only options (checked against the signature, so unknown options
raise). Images here are real: MRI builders measure a real image through ``RealAsComplexChannels``
unless the prior has two (real, imaginary) channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from invdiff import samplers
from invdiff.operators import (
    BicubicDownsampling,
    Blur,
    BoxDownsampling,
    Inpainting,
    MulticoilMRI,
    Operator,
    RealAsComplexChannels,
    SinglecoilMRI,
    birdcage_maps,
    box_mask,
    brush_stroke_mask,
    equispaced_column_mask,
    gaussian_kernel,
    half_mask,
    motion_kernel,
    poisson_disc_mask,
    random_column_mask,
    random_pixel_mask,
)

__all__ = ["OPERATORS", "SAMPLERS", "SAMPLER_PRESETS", "kspace_mask", "with_preset"]

MaskKind = Literal["random", "equispaced", "poisson"]


def kspace_mask(
    spatial: tuple[int, ...], *, mask: MaskKind, acceleration: float, center_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    if mask == "random":
        return random_column_mask(spatial, acceleration, center_fraction, generator=generator)
    if mask == "equispaced":
        return equispaced_column_mask(spatial, acceleration, center_fraction, generator=generator)
    if mask == "poisson":
        calib = max(4, round(min(spatial[-2:]) * center_fraction))
        return poisson_disc_mask(spatial, acceleration, calib, generator=generator)
    raise ValueError(f"mask must be 'random', 'equispaced' or 'poisson', got {mask!r}")


def _measure_real(op: Operator, shape: tuple[int, ...]) -> Operator:
    """A one-channel real image meets complex physics through the zero-imaginary embedding."""
    return op @ RealAsComplexChannels(shape[1:]) if shape[0] == 1 else op


def _check_mri_channels(shape: tuple[int, ...]) -> None:
    if shape[0] not in (1, 2):
        raise ValueError(f"MRI images have 1 (magnitude) or 2 (real, imaginary) channels, got shape {shape}")


def build_mri(
    shape: tuple[int, ...],
    *,
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    mask: MaskKind = "random",
    generator: torch.Generator,
) -> Operator:
    """Single-coil Cartesian MRI with a fastMRI-style column mask or a 2D Poisson-disc mask."""
    _check_mri_channels(shape)
    m = kspace_mask(shape[1:], mask=mask, acceleration=acceleration, center_fraction=center_fraction, generator=generator)
    return _measure_real(SinglecoilMRI(m.expand(shape[1:]), complex_channels=True), shape)


def build_mri_multicoil(
    shape: tuple[int, ...],
    *,
    coils: int = 8,
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    mask: MaskKind = "random",
    generator: torch.Generator,
) -> Operator:
    """SENSE multi-coil MRI with simulated birdcage coil maps."""
    _check_mri_channels(shape)
    m = kspace_mask(shape[1:], mask=mask, acceleration=acceleration, center_fraction=center_fraction, generator=generator)
    maps = birdcage_maps(shape[1:], coils)
    return _measure_real(MulticoilMRI(m.expand(shape[1:]), maps, complex_channels=True), shape)


def build_inpainting(
    shape: tuple[int, ...],
    *,
    mask: Literal["random", "box", "half", "brush"] = "random",
    keep_fraction: float = 0.3,
    box_size: int | None = None,
    generator: torch.Generator,
) -> Operator:
    """Inpainting: random pixels (``keep_fraction`` kept), a centred box, the right half, or brush strokes."""
    spatial = shape[1:]
    if mask == "random":
        m = random_pixel_mask(spatial, keep_fraction, generator=generator)
    elif mask == "box":
        m = box_mask(spatial, box_size or max(1, min(spatial) // 4), generator=generator)
    elif mask == "half":
        m = half_mask(spatial, "right")
    elif mask == "brush":
        m = brush_stroke_mask(spatial, generator=generator)
    else:
        raise ValueError(f"mask must be 'random', 'box', 'half' or 'brush', got {mask!r}")
    return Inpainting(m, channels=shape[0])


def build_blur(
    shape: tuple[int, ...],
    *,
    kernel: Literal["gaussian", "motion"] = "gaussian",
    sigma: float = 2.0,
    size: int | None = None,
    intensity: float = 0.5,
    generator: torch.Generator,
) -> Operator:
    """Circular blur with a Gaussian (``sigma``) or random motion (``size``, ``intensity``) kernel."""
    ndim = len(shape) - 1
    if kernel == "gaussian":
        k = gaussian_kernel(sigma, size=size, ndim=ndim)
    elif kernel == "motion":
        k = motion_kernel(size or 9, generator, intensity=intensity, ndim=ndim)
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'motion', got {kernel!r}")
    return Blur(k, shape)


def build_super_resolution(
    shape: tuple[int, ...], *, factor: int = 4, method: Literal["box", "bicubic"] = "bicubic", generator: torch.Generator
) -> Operator:
    """Downsampling by an integer ``factor``: block average or antialiased bicubic."""
    if method == "box":
        return BoxDownsampling(shape, factor)
    if method == "bicubic":
        return BicubicDownsampling(shape, factor)
    raise ValueError(f"method must be 'box' or 'bicubic', got {method!r}")


OPERATORS: dict[str, Callable[..., Operator]] = {
    "mri": build_mri,
    "mri-multicoil": build_mri_multicoil,
    "inpainting": build_inpainting,
    "blur": build_blur,
    "super-resolution": build_super_resolution,
}

SAMPLERS: dict[str, Callable[..., samplers.Reconstruction]] = {
    "red-diff": samplers.red_diff,
    "smc": samplers.smc,
}

# Defaults the pipeline uses for real scans, under any option the user gives. invdiff's RED-Diff data
# term is the true likelihood ||A x - y||^2 / (2 sigma^2), so at scan noise levels (sigma ~ 0.02 in prior
# space) its prior weight is far above the paper's 0.25, which weighs a mean-normalised data term
# without sigma. Chosen on MNI validation slices (benchmarks/mri_reconstruction.py, benchmarks/RESULTS.md).
SAMPLER_PRESETS: dict[str, dict[str, object]] = {
    "red-diff": {"steps": 200, "lam": 300.0, "lr": 0.1},
    "smc": {"particles": 16, "steps": 100},
}


def with_preset(name: str, options: dict[str, object]) -> dict[str, object]:
    """The preset of sampler ``name`` overridden by ``options``."""
    return {**SAMPLER_PRESETS.get(name, {}), **options}
