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
from .cropping import CenterCrop
from .downsampling import BicubicDownsampling, BoxDownsampling
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
from .masking import Inpainting, MaskOperator, box_mask, brush_stroke_mask, half_mask, random_pixel_mask
from .noise import GaussianNoise, PoissonNoise, RicianNoise
from .separable import KroneckerOperator, SeparableOperator

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
    "MaskOperator",
    "Operator",
    "PixelCompletion",
    "PoissonNoise",
    "RicianNoise",
    "SeparableOperator",
    "SpectralResponse",
    "box_kernel",
    "box_mask",
    "brush_stroke_mask",
    "camera_rgb_srf",
    "cie_xyz_srf",
    "compose",
    "conjugate_gradient",
    "gaussian_kernel",
    "gaussian_srf",
    "half_mask",
    "motion_kernel",
    "random_pixel_mask",
    "require_linear",
    "require_svd",
]
