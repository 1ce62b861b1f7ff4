"""Centre cropping as a linear operator (adjoint: zero padding).

Networks need spatial sizes divisible by a power of two; composing a measurement operator with
``CenterCrop`` lets a sampler work on a padded canvas while the physics sees the true grid.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import LinearOperator

__all__ = ["CenterCrop"]


class CenterCrop(LinearOperator):
    """Crop the trailing spatial axes of ``x_shape`` to ``out_spatial`` around the centre.

    When a size difference is odd, the extra row/column is cropped at the end.

    Args:
        x_shape: per-item input shape ``(C, *spatial)``.
        out_spatial: output spatial size, each <= the input's.
    """

    def __init__(self, x_shape: tuple[int, ...], out_spatial: tuple[int, ...], *, is_complex: bool = False) -> None:
        super().__init__()
        x_shape, out_spatial = tuple(int(s) for s in x_shape), tuple(int(s) for s in out_spatial)
        if len(out_spatial) >= len(x_shape) or len(out_spatial) not in (1, 2, 3):
            raise ValueError(f"out_spatial must give 1-3 trailing axes of x_shape {x_shape}, got {out_spatial}")
        spatial = x_shape[len(x_shape) - len(out_spatial) :]
        if any(o < 1 or o > s for o, s in zip(out_spatial, spatial, strict=True)):
            raise ValueError(f"out_spatial must be between 1 and the input size {spatial} on each axis, got {out_spatial}")
        self.x_shape = x_shape
        self.y_shape = x_shape[: len(x_shape) - len(out_spatial)] + out_spatial
        self.x_is_complex = self.y_is_complex = is_complex
        self._before = tuple((s - o) // 2 for s, o in zip(spatial, out_spatial, strict=True))
        self._after = tuple(s - o - b for s, o, b in zip(spatial, out_spatial, self._before, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        index = [slice(None)] * (x.ndim - len(self._before))
        index += [slice(b, x.shape[x.ndim - len(self._before) + i] - a) for i, (b, a) in enumerate(zip(self._before, self._after, strict=True))]
        return x[tuple(index)]

    def adjoint(self, y: Tensor) -> Tensor:
        pad: list[int] = []
        for b, a in zip(reversed(self._before), reversed(self._after), strict=True):
            pad += [b, a]
        return F.pad(y, pad)

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        self.check_y(y)
        return self.adjoint(y)  # A A^H = I, so the adjoint is the pseudo-inverse
