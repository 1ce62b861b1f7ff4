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
from .noise import GaussianNoise, PoissonNoise, RicianNoise

__all__ = [
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
