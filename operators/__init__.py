"""invdiff.operators: forward measurement models ``y = A(x)`` and noise models.

Installed from the repository's ``operators/`` folder; import it as ``invdiff.operators``.
Tiers: ``Operator`` (forward, autograd VJP) -> ``LinearOperator`` (exact adjoint, pinv, norm)
-> ``DecomposableOperator`` (closed-form SVD). Noise models are separate objects.
"""

from .base import (
    ComposedLinearOperator,
    ComposedOperator,
    DecomposableOperator,
    LinearOperator,
    Operator,
    compose,
    conjugate_gradient,
    require_linear,
    require_svd,
)
from .blur import Blur, box_kernel, gaussian_kernel, motion_kernel
from .coil_maps import birdcage_maps, espirit_maps
from .cropping import CenterCrop
from .downsampling import BicubicDownsampling, BoxDownsampling
from .embedding import RealAsComplexChannels
from .fft import fft2c, fftnc, ifft2c, ifftnc
from .hyperspectral import (
    BandCompletion,
    HyperspectralDenoising,
    HyperspectralSuperResolution,
    PixelCompletion,
    SpectralResponse,
    camera_rgb_srf,
    cie_xyz_srf,
    gaussian_srf,
)
from .kspace_masks import equispaced_column_mask, mask_acceleration, poisson_disc_mask, random_column_mask
from .masking import Inpainting, MaskOperator, box_mask, brush_stroke_mask, half_mask, random_pixel_mask
from .mri import MRI, MulticoilMRI, SinglecoilMRI, channels_to_complex, complex_to_channels, rss, zero_filled
from .noise import GaussianNoise, PoissonNoise, RicianNoise
from .separable import KroneckerOperator, SeparableOperator
from .wavelet import (
    SpectralTransform,
    Synthesis,
    WaveletTransform,
    dwt_matrix,
    is_orthonormal_transform,
    transform_from_config,
    transform_to_config,
)

__all__ = [
    "BandCompletion",
    "BicubicDownsampling",
    "Blur",
    "BoxDownsampling",
    "CenterCrop",
    "ComposedLinearOperator",
    "ComposedOperator",
    "DecomposableOperator",
    "GaussianNoise",
    "HyperspectralDenoising",
    "HyperspectralSuperResolution",
    "Inpainting",
    "KroneckerOperator",
    "LinearOperator",
    "MRI",
    "MaskOperator",
    "MulticoilMRI",
    "Operator",
    "PixelCompletion",
    "PoissonNoise",
    "RealAsComplexChannels",
    "RicianNoise",
    "SeparableOperator",
    "SinglecoilMRI",
    "SpectralResponse",
    "SpectralTransform",
    "Synthesis",
    "WaveletTransform",
    "birdcage_maps",
    "box_kernel",
    "box_mask",
    "brush_stroke_mask",
    "camera_rgb_srf",
    "channels_to_complex",
    "cie_xyz_srf",
    "complex_to_channels",
    "compose",
    "conjugate_gradient",
    "dwt_matrix",
    "equispaced_column_mask",
    "espirit_maps",
    "fft2c",
    "fftnc",
    "gaussian_kernel",
    "gaussian_srf",
    "half_mask",
    "ifft2c",
    "ifftnc",
    "is_orthonormal_transform",
    "mask_acceleration",
    "motion_kernel",
    "poisson_disc_mask",
    "random_column_mask",
    "random_pixel_mask",
    "require_linear",
    "require_svd",
    "rss",
    "transform_from_config",
    "transform_to_config",
    "zero_filled",
]
