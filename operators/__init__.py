"""invdiff.operators: forward measurement models ``y = A(x)`` and noise models.

Installed from the repository's ``operators/`` folder; import it as ``invdiff.operators``.
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
from .noise import GaussianNoise, PoissonNoise, RicianNoise

__all__ = [
    "Blur",
    "CenterCrop",
    "box_kernel",
    "gaussian_kernel",
    "motion_kernel",
    "ComposedLinearOperator",
    "ComposedOperator",
    "DecomposableOperator",
    "GaussianNoise",
    "LinearOperator",
    "Operator",
    "PoissonNoise",
    "RicianNoise",
    "compose",
    "conjugate_gradient",
    "require_linear",
    "require_svd",
]
