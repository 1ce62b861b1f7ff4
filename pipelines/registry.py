"""The name -> object tables of the CLI and the bundle: operators (as builders) and samplers.

A new sampler plugs in with one entry in ``SAMPLERS``; a new operator with one builder here.
Builders take the image shape ``(C, *spatial)`` of one slice or volume, a generator for their
random parameters, and keyword-only options (checked against the signature, so unknown options
raise). Images here are real: MRI builders measure a real image through ``RealAsComplexChannels``
unless the prior has two (real, imaginary) channels.

Hyperspectral operators (``hsi-*``, listed in ``CUBE_OPERATORS``) take a whole cube ``(bands, H, W)``
as one image with the bands as channels. No trained cube prior ships, so they pair only with the
prior-free samplers of ``CUBE_SAMPLERS`` (DDS2M), and those only with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from invdiff import samplers
from invdiff.operators import (
    BandCompletion,
    BicubicDownsampling,
    Blur,
    BoxDownsampling,
    HyperspectralDenoising,
    HyperspectralSuperResolution,
    Inpainting,
    MulticoilMRI,
    Operator,
    PixelCompletion,
    RealAsComplexChannels,
    SinglecoilMRI,
    SpectralResponse,
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
from invdiff.operators.hyperspectral import camera_rgb_srf, cie_xyz_srf
from invdiff.vs2m import CPU_SPATIAL, PAPER_SPATIAL, SpatialConfig

__all__ = [
    "CUBE_OPERATORS",
    "CUBE_SAMPLERS",
    "OPERATORS",
    "SAMPLERS",
    "SAMPLER_PRESETS",
    "kspace_mask",
    "sampler_arguments",
    "with_preset",
]

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


def _cube_shape(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """Hyperspectral builders need ``(bands, H, W)`` with several bands (a 1-channel image is not a cube)."""
    if len(shape) != 3 or shape[0] < 2:
        raise ValueError(f"operator {name!r} needs a hyperspectral cube (bands >= 2, H, W), got image shape {tuple(shape)}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _missing_rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"missing_rate must be a number in [0, 1) (share of entries missing), got {value!r}")
    return float(value)


def build_hsi_denoising(shape: tuple[int, ...], *, generator: torch.Generator) -> Operator:
    """Hyperspectral denoising: the identity on the cube (the noise comes from ``--noise-sigma``)."""
    return HyperspectralDenoising(_cube_shape(shape, "hsi-denoising"))


def build_hsi_completion(
    shape: tuple[int, ...],
    *,
    missing_rate: float = 0.5,
    mode: Literal["voxels", "pixels", "bands"] = "voxels",
    missing_bands: list[int] | None = None,
    generator: torch.Generator,
) -> Operator:
    """Cube completion: a random ``missing_rate`` of single voxels, of whole pixels (all bands), or of whole
    bands (``mode="bands"``; or exactly the band indices ``missing_bands``)."""
    cube = _cube_shape(shape, "hsi-completion")
    rate = _missing_rate(missing_rate)
    if missing_bands is not None and mode != "bands":
        raise ValueError(f"missing_bands needs mode='bands', got mode={mode!r}")
    if mode == "voxels":
        return PixelCompletion(cube, random_pixel_mask(cube, 1 - rate, generator=generator))
    if mode == "pixels":
        return PixelCompletion(cube, random_pixel_mask(cube[1:], 1 - rate, generator=generator))
    if mode != "bands":
        raise ValueError(f"mode must be 'voxels', 'pixels' or 'bands', got {mode!r}")
    if missing_bands is None:
        count = round(rate * cube[0])
        if count >= cube[0]:
            raise ValueError(f"missing_rate {rate} removes all {cube[0]} bands; at least one band must be observed")
        missing_bands = sorted(torch.randperm(cube[0], generator=generator)[:count].tolist())
    return BandCompletion(cube, missing_bands)


def build_hsi_super_resolution(
    shape: tuple[int, ...], *, factor: int = 4, blur_sigma: float | None = None, generator: torch.Generator
) -> Operator:
    """Spatial super-resolution: per-band Gaussian blur (``blur_sigma``; default FWHM = ``factor`` pixels), then
    decimation by ``factor``; H and W must be multiples of ``factor``."""
    return HyperspectralSuperResolution(_cube_shape(shape, "hsi-super-resolution"), factor, blur_sigma)


def build_hsi_spectral_response(
    shape: tuple[int, ...],
    *,
    response: Literal["camera-rgb", "cie-xyz"] = "camera-rgb",
    wavelengths: list[float] | tuple[float, ...] = (400.0, 700.0),
    generator: torch.Generator,
) -> Operator:
    """Spectral response to 3 channels (a typical RGB camera, or CIE 1931 XYZ); ``wavelengths`` are the cube's
    band centres in nm, one per band or ``[first, last]`` for evenly spaced bands (default 400-700 nm)."""
    cube = _cube_shape(shape, "hsi-spectral-response")
    if not isinstance(wavelengths, (list, tuple)) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in wavelengths
    ):
        raise ValueError(f"wavelengths must be a list of band centres in nm, got {wavelengths!r}")
    if len(wavelengths) not in (2, cube[0]):
        raise ValueError(
            f"wavelengths has {len(wavelengths)} values but the cube has {cube[0]} bands; "
            "give one band centre per band or [first, last] in nm"
        )
    if len(wavelengths) == 2:  # [first, last]: evenly spaced band centres
        centres = torch.linspace(float(wavelengths[0]), float(wavelengths[1]), cube[0], dtype=torch.float64)
    else:
        centres = torch.as_tensor(wavelengths, dtype=torch.float64)
    if response == "camera-rgb":
        srf = camera_rgb_srf(centres)
    elif response == "cie-xyz":
        srf = cie_xyz_srf(centres)
    else:
        raise ValueError(f"response must be 'camera-rgb' or 'cie-xyz', got {response!r}")
    return SpectralResponse(srf, cube[1:])


OPERATORS: dict[str, Callable[..., Operator]] = {
    "mri": build_mri,
    "mri-multicoil": build_mri_multicoil,
    "inpainting": build_inpainting,
    "blur": build_blur,
    "super-resolution": build_super_resolution,
    "hsi-denoising": build_hsi_denoising,
    "hsi-completion": build_hsi_completion,
    "hsi-super-resolution": build_hsi_super_resolution,
    "hsi-spectral-response": build_hsi_spectral_response,
}

# Operators on whole hyperspectral cubes (bands, H, W): the CLI reads their input with invdiff.cube_io.
CUBE_OPERATORS: frozenset[str] = frozenset(name for name in OPERATORS if name.startswith("hsi-"))

SAMPLERS: dict[str, Callable[..., samplers.Reconstruction]] = {
    "red-diff": samplers.red_diff,
    "smc": samplers.smc,
    "dds2m": samplers.dds2m,
    # RED-Diff in the latent of a wavelet-latent prior (any sampler runs there when such a prior is given).
    "wavelet-latent": samplers.wavelet_latent,
}

# Samplers that restore cubes without a trained prior (they fit untrained networks to each measurement).
CUBE_SAMPLERS: frozenset[str] = frozenset({"dds2m"})

# Defaults the pipeline uses for real scans, under any option the user gives. invdiff's RED-Diff data
# term is the true likelihood ||A x - y||^2 / (2 sigma^2), so at scan noise levels (sigma ~ 0.02 in prior
# space) its prior weight is far above the paper's 0.25, which weighs a mean-normalised data term
# without sigma. Chosen on MNI validation slices (benchmarks/mri_reconstruction.py, benchmarks/RESULTS.md).
SAMPLER_PRESETS: dict[str, dict[str, object]] = {
    "red-diff": {"steps": 200, "lam": 300.0, "lr": 0.1},
    "smc": {"particles": 16, "steps": 100},
    # What every DDS2M task shares; the per-operator presets below add the schedule length and the etas.
    "dds2m": {"steps": 800, "lr": 5e-3},
}
# "wavelet-latent" is RED-Diff in an orthonormal change of basis (the same likelihood scale), but with another SNR
# weighting: the paper's linear g(s) = s weighs the noisiest steps most, where the latent network's epsilon is least
# accurate (on the dipy slice, 4x MRI: 17.1 dB linear, 26.9 dB trunc_linear). Weighting and lambda chosen on MNI
# validation slices (benchmarks/wavelet_latent.py; lambda 3 and 1 were worse). Any RED-Diff run with a
# wavelet-latent prior takes this preset.
SAMPLER_PRESETS["wavelet-latent"] = {**SAMPLER_PRESETS["red-diff"], "lam": 10.0, "weighting": "trunc_linear"}

# Presets of a sampler for one operator, over its general preset: DDS2M's per-task CPU settings, chosen on the
# held-out scene of benchmarks/hsi_restoration.py (invdiff.samplers.dds2m.DDS2M_PRESETS). Band completion and
# spectral response were not tuned; they take completion's settings (both leave a null space to fill).
OPERATOR_SAMPLER_PRESETS: dict[tuple[str, str], dict[str, object]] = {
    ("dds2m", "hsi-denoising"): samplers.DDS2M_PRESETS["denoising"],
    ("dds2m", "hsi-completion"): samplers.DDS2M_PRESETS["completion"],
    ("dds2m", "hsi-super-resolution"): samplers.DDS2M_PRESETS["super_resolution"],
    ("dds2m", "hsi-spectral-response"): samplers.DDS2M_PRESETS["completion"],
}


def with_preset(name: str, options: dict[str, object], *, operator: str | None = None) -> dict[str, object]:
    """The preset of sampler ``name`` (for ``operator``, where it has one) overridden by ``options``."""
    return {**SAMPLER_PRESETS.get(name, {}), **OPERATOR_SAMPLER_PRESETS.get((name, operator or ""), {}), **options}


_SPATIAL_CONFIGS = {"cpu": CPU_SPATIAL, "paper": PAPER_SPATIAL}


def _spatial_config(value: object) -> SpatialConfig:
    """DDS2M's ``spatial`` option from text: ``cpu``, ``paper`` or ``{"channels": [...], "skip_channels": [...],
    "kernels": [...]}`` (one entry per U-Net level)."""
    if isinstance(value, SpatialConfig):
        return value
    if isinstance(value, str) and value in _SPATIAL_CONFIGS:
        return _SPATIAL_CONFIGS[value]
    fields = ("channels", "skip_channels", "kernels")
    if isinstance(value, dict) and set(value) == set(fields) and all(isinstance(value[f], list) for f in fields):
        return SpatialConfig(*(tuple(value[f]) for f in fields))
    raise ValueError(
        f"spatial must be 'cpu', 'paper' or {{\"channels\": [...], \"skip_channels\": [...], \"kernels\": [...]}}, got {value!r}"
    )


# Sampler options whose values arrive as text or JSON (CLI, bundle configs) but that the sampler takes as objects.
_OPTION_CONVERTERS: dict[tuple[str, str], Callable[[object], object]] = {("dds2m", "spatial"): _spatial_config}


def sampler_arguments(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (after ``with_preset``) as sampler ``name`` takes them (e.g. ``spatial="paper"`` -> a SpatialConfig)."""
    return {k: _OPTION_CONVERTERS[(name, k)](v) if (name, k) in _OPTION_CONVERTERS else v for k, v in options.items()}
