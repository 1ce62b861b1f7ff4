"""Contract-battery cases for the orthonormal wavelet / spectral transforms and measurements of their latents.

The transforms themselves (analysis ``W``, synthesis ``W^T``, 2D and 3D, one and several levels, Haar and
Daubechies), the partially isometric spectral transforms, and the operators a latent sampler sees:
``op @ Synthesis(W)`` for masking, blur, single-coil MRI of a real image and hyperspectral super-resolution
of a cube in a spectral + spatial latent. Sizes keep ``numel(x) <= 1600`` so the dense opnorm check runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.operators import (
    Blur,
    HyperspectralSuperResolution,
    Inpainting,
    Operator,
    RealAsComplexChannels,
    SinglecoilMRI,
    SpectralTransform,
    Synthesis,
    WaveletTransform,
    gaussian_kernel,
    random_column_mask,
    random_pixel_mask,
)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask_in_db2_latent(seed: int) -> Operator:
    return Inpainting(random_pixel_mask((16, 12), 0.4, generator=_g(seed))) @ Synthesis(
        WaveletTransform((1, 16, 12), "db2")
    )


def _blur_in_haar_latent(seed: int) -> Operator:
    return Blur(gaussian_kernel(1.0 + 0.2 * seed, size=5), (1, 16, 16)) @ Synthesis(
        WaveletTransform((1, 16, 16), "haar", 2)
    )


def _mri_in_db4_latent(seed: int) -> Operator:
    mask = random_column_mask((16, 16), 4, 0.15, generator=_g(seed))
    mri = SinglecoilMRI(mask, complex_channels=True) @ RealAsComplexChannels((16, 16))
    return mri @ Synthesis(WaveletTransform((1, 16, 16), "db4"))


def _sr_in_spectral_spatial_latent(seed: int) -> Operator:
    spectral = SpectralTransform.wavelet(8, (8, 8), "db2", levels=1, keep=6)
    spatial = WaveletTransform((6, 8, 8), "haar")
    return HyperspectralSuperResolution((8, 8, 8), 2, 1.0) @ Synthesis(spatial @ spectral)


def _pca(seed: int) -> Operator:
    data = torch.randn(3, 10, 4, 5, generator=_g(seed)).cumsum(1)  # smooth-ish spectra
    return SpectralTransform.pca(data, 4)


CASES: dict[str, Callable[[int], Operator]] = {
    "haar_2d": lambda seed: WaveletTransform((1, 8, 8), "haar"),
    "db2_2d_2levels_2ch": lambda seed: WaveletTransform((2, 16, 8), "db2", 2),
    "db4_3d": lambda seed: WaveletTransform((1, 8, 8, 16), "db4"),
    "db4_2d_boundary_mode": lambda seed: WaveletTransform((1, 16, 24), "db4", mode="boundary"),
    "db2_3d_boundary_mode": lambda seed: Synthesis(WaveletTransform((1, 8, 4, 8), "db2", mode="boundary")),
    "haar_3d_2levels": lambda seed: WaveletTransform((1, 8, 8, 8), "haar", 2),
    "synthesis_db2_2d_3levels": lambda seed: Synthesis(WaveletTransform((1, 32, 32), "db2", 3)),
    "synthesis_sym4_3d": lambda seed: Synthesis(WaveletTransform((1, 8, 8, 8), "sym4")),
    "spectral_haar_full": lambda seed: SpectralTransform.wavelet(16, (4, 5), "haar", 2),
    "spectral_db2_truncated": lambda seed: SpectralTransform.wavelet(16, (3, 5), "db2", 2, keep=6),
    "spectral_pca": _pca,
    "synthesis_spectral_truncated": lambda seed: Synthesis(SpectralTransform.wavelet(12, (5, 4), "haar", keep=6)),
    "mask_in_db2_latent": _mask_in_db2_latent,
    "blur_in_haar_latent_2levels": _blur_in_haar_latent,
    "mri_in_db4_latent": _mri_in_db4_latent,
    "sr_in_spectral_spatial_latent": _sr_in_spectral_spatial_latent,
}
