"""Downsampling by an integer factor, 2D and 3D: block average and antialiased bicubic.

Both are ``SeparableOperator``s (one 1-D matrix per spatial axis, the same for every channel),
so they have an exact SVD from the 1-D SVDs, a closed-form pseudo-inverse and an exact adjoint.

Grid convention (pixel centres, as ``align_corners=False`` in PyTorch and MATLAB ``imresize``):
low-resolution sample ``i`` sits at high-resolution coordinate ``c_i = (i + 1/2) f - 1/2`` (0-based),
i.e. at the centre of the block of ``f`` input pixels it summarises.

- ``BoxDownsampling``: the mean of each ``f x f`` (``f x f x f``) block.
- ``BicubicDownsampling``: antialiased bicubic: the Keys cubic kernel ``k`` with ``a = -1/2`` stretched
  by the factor, weights ``w_ij = k((j - c_i) / f) / f`` over ``|j - c_i| < 2f``, each row normalised to
  sum to 1 (MATLAB ``imresize(x, 1/f, 'bicubic')``; PyTorch ``interpolate(..., mode='bicubic',
  antialias=True)``). The boundary rule is folded into the 1-D matrix:

  * ``"reflect"`` (default): half-sample symmetric extension ``x[-1] = x[0]``, ``x[n] = x[n-1]``
    (MATLAB ``imresize``; NumPy ``pad(mode='symmetric')``; SciPy ``mode='reflect'``);
  * ``"truncate"``: taps outside the image are dropped and the row renormalised (PyTorch's
    ``antialias=True`` / PIL); identical to ``"reflect"`` away from the borders;
  * ``"periodic"``: circular extension.

Sizes: every spatial size must be a multiple of its factor. A non-divisible size raises a
``ValueError`` naming the shape and the factor (crop or pad the image first); nothing is cropped
silently.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .separable import SeparableOperator

__all__ = [
    "BicubicDownsampling",
    "Boundary",
    "BoxDownsampling",
    "bicubic_matrix",
    "box_matrix",
    "keys_cubic",
    "resampling_matrix",
]

Boundary = Literal["reflect", "truncate", "periodic"]
_BOUNDARIES = ("reflect", "truncate", "periodic")


def keys_cubic(t: Tensor, a: float = -0.5) -> Tensor:
    """The Keys (1981) cubic convolution kernel, support ``|t| < 2``.

    ``k(t) = (a+2)|t|^3 - (a+3)|t|^2 + 1`` for ``|t| <= 1``; ``a|t|^3 - 5a|t|^2 + 8a|t| - 4a`` for
    ``1 < |t| < 2``; 0 otherwise. ``a = -1/2`` is the MATLAB/PIL/antialiased-PyTorch choice.

    References:
        R. Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 29(6), 1981.
    """
    t = t.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def box_matrix(n: int, factor: int) -> Tensor:
    """``(n // factor, n)`` float64 matrix averaging consecutive blocks of ``factor`` samples."""
    _check_divisible((n,), (factor,), "n")
    rows = torch.arange(n) // factor
    out = torch.zeros(n // factor, n, dtype=torch.float64)
    out[rows, torch.arange(n)] = 1.0 / factor
    return out


def bicubic_matrix(n: int, factor: int, boundary: Boundary = "reflect") -> Tensor:
    """``(n // factor, n)`` float64 antialiased bicubic downsampling matrix (see the module docstring)."""
    _check_divisible((n,), (factor,), "n")
    f = factor
    centres = (torch.arange(n // f, dtype=torch.float64) + 0.5) * f - 0.5
    taps = torch.floor(centres).long()[:, None] + torch.arange(-2 * f, 2 * f + 2)[None, :]
    weights = keys_cubic((taps - centres[:, None]) / f) / f
    return resampling_matrix(taps, weights, n, boundary)


def resampling_matrix(taps: Tensor, weights: Tensor, n: int, boundary: Boundary) -> Tensor:
    """Fold per-row taps ``(m, K)`` (integer positions, possibly outside ``[0, n)``) and their weights
    into an ``(m, n)`` matrix under a boundary rule, with every row normalised to sum to 1.

    ``"reflect"`` and ``"periodic"`` normalise over all taps, then map the outside positions inside
    (half-sample symmetric / circular); ``"truncate"`` drops the outside taps and renormalises.
    """
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    weights = weights.to(torch.float64)
    if boundary == "truncate":
        inside = (taps >= 0) & (taps < n)
        weights = torch.where(inside, weights, torch.zeros_like(weights))
        idx = taps.clamp(0, n - 1)
    elif boundary == "periodic":
        idx = taps % n
    else:  # reflect: period 2n, second half mirrored (handles kernels wider than the signal too)
        idx = taps % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    weights = weights / weights.sum(dim=1, keepdim=True)
    out = torch.zeros(taps.shape[0], n, dtype=torch.float64)
    return out.scatter_add_(1, idx, weights)


class BoxDownsampling(SeparableOperator):
    """Block-average downsampling by an integer factor: ``y`` = mean of each ``f x f`` (x ``f``) block.

    The 1-D matrix is ``I_m ⊗ (1/f) 1_f^T``; all its singular values equal ``1/sqrt(f)``.

    Args:
        shape: ``x_shape`` ``(C, H, W)`` or ``(C, D, H, W)``.
        factor: integer >= 1, one for all spatial axes or one per axis (e.g. ``(1, 2, 2)`` in-plane only).

    Shapes:
        x: ``(B, C, H, W)`` -> y: ``(B, C, H / f, W / f)`` (3D likewise), real.

    Raises:
        ValueError: bad shape; ``factor`` not an integer >= 1; a spatial size not divisible by its factor.

    Examples:
        >>> op = BoxDownsampling((1, 4, 4), 2)
        >>> op(torch.arange(16.0).view(1, 1, 4, 4))
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """

    def __init__(self, shape: Sequence[int], factor: int | Sequence[int]) -> None:
        shape, factors = _check_downsampling(shape, factor)
        matrices = [None if f == 1 else box_matrix(n, f) for n, f in zip(shape[1:], factors, strict=True)]
        super().__init__(matrices, channels=shape[0], spatial_shape=shape[1:])
        self.factor = factors

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, y_shape={self.y_shape}, factor={self.factor}"


class BicubicDownsampling(SeparableOperator):
    """Antialiased bicubic downsampling by an integer factor (Keys kernel, ``a = -1/2``), 2D or 3D.

    Args:
        shape: ``x_shape`` ``(C, H, W)`` or ``(C, D, H, W)``.
        factor: integer >= 1, one for all spatial axes or one per axis.
        boundary: ``"reflect"`` (half-sample symmetric, MATLAB ``imresize``), ``"truncate"`` (PyTorch
            ``antialias=True``) or ``"periodic"``; see the module docstring.

    Shapes:
        x: ``(B, C, H, W)`` -> y: ``(B, C, H / f, W / f)`` (3D likewise), real.

    Raises:
        ValueError: bad shape; ``factor`` not an integer >= 1; a spatial size not divisible by its
            factor; unknown ``boundary``.

    Examples:
        >>> op = BicubicDownsampling((2, 8, 8), 2)
        >>> op(torch.ones(1, 2, 8, 8)).shape, bool(torch.allclose(op(torch.ones(1, 2, 8, 8)), torch.ones(1)))
        (torch.Size([1, 2, 4, 4]), True)
    """

    def __init__(self, shape: Sequence[int], factor: int | Sequence[int], *, boundary: Boundary = "reflect") -> None:
        shape, factors = _check_downsampling(shape, factor)
        if boundary not in _BOUNDARIES:
            raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
        matrices = [None if f == 1 else bicubic_matrix(n, f, boundary) for n, f in zip(shape[1:], factors, strict=True)]
        super().__init__(matrices, channels=shape[0], spatial_shape=shape[1:])
        self.factor = factors
        self.boundary = boundary

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, y_shape={self.y_shape}, factor={self.factor}, boundary={self.boundary!r}"


# ---- validation ----------------------------------------------------------------------------------
def check_image_shape(shape: object, layout: str = "(C, H, W) or (C, D, H, W)", ndims: tuple[int, ...] = (3, 4)) -> tuple[int, ...]:
    """Validate an ``x_shape`` (channels first, no batch axis) and return it as a tuple of ints."""
    if (
        isinstance(shape, Tensor)
        or not isinstance(shape, Sequence)
        or len(shape) not in ndims
        or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape)
    ):
        raise ValueError(f"shape must be {layout} with positive ints (no batch axis), got {shape!r}")
    return tuple(int(n) for n in shape)


def check_factor(factor: object, ndim: int) -> tuple[int, ...]:
    """Validate an integer factor (one for all ``ndim`` spatial axes, or one per axis)."""
    values = (factor,) * ndim if not isinstance(factor, Sequence) or isinstance(factor, str) else tuple(factor)
    if len(values) != ndim or any(isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1 for f in values):
        raise ValueError(f"factor must be an integer >= 1 (or a sequence of {ndim} such integers), got {factor!r}")
    return tuple(int(f) for f in values)


def _check_divisible(sizes: Sequence[int], factors: Sequence[int], what: str) -> None:
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1:
            raise ValueError(f"factor must be an integer >= 1, got {f!r}")
    for n, f in zip(sizes, factors, strict=True):
        if n % f:
            raise ValueError(
                f"{what} {tuple(sizes) if len(sizes) > 1 else sizes[0]} is not divisible by factor "
                f"{tuple(factors) if len(factors) > 1 else factors[0]} ({n} % {f} = {n % f}); crop or pad to a multiple"
            )


def _check_downsampling(shape: object, factor: object) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = check_image_shape(shape)
    factors = check_factor(factor, len(shape) - 1)
    for n, f in zip(shape[1:], factors, strict=True):
        if n % f:
            raise ValueError(
                f"shape {shape} is not divisible by factor {factor!r}: spatial size {n} is not a multiple of {f}; "
                "crop or pad the image to a multiple of the factor"
            )
    return shape, factors
