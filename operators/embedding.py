"""A real image as the real channel of a two-channel complex image (imaginary part zero).

Magnitude priors (one real channel) meet complex physics through this embedding:
``SinglecoilMRI(mask, complex_channels=True) @ RealAsComplexChannels(shape)`` measures a real
image; its exact adjoint keeps the real channel of the complex adjoint.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["RealAsComplexChannels"]


class RealAsComplexChannels(LinearOperator):
    """``(B, 1, *spatial)`` real -> ``(B, 2, *spatial)`` real with channel 1 (imaginary) zero."""

    def __init__(self, spatial: tuple[int, ...]) -> None:
        super().__init__()
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) not in (2, 3) or any(s < 1 for s in spatial):
            raise ValueError(f"spatial must be (H, W) or (D, H, W) with positive sizes, got {spatial}")
        self.x_shape = (1, *spatial)
        self.y_shape = (2, *spatial)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, torch.zeros_like(x)], dim=1)

    def adjoint(self, y: Tensor) -> Tensor:
        return y[:, :1]

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        self.check_y(y)
        return y[:, :1]  # A^H A = I, so the adjoint is the pseudo-inverse
