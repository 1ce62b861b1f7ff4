"""Centred, orthonormal discrete Fourier transforms over the trailing image axes.

The convention is fastMRI's (``fastmri.fft2c``) and sigpy's (``sigpy.fft``)::

    fftnc(x)  = fftshift(fftn(ifftshift(x), norm="ortho"))
    ifftnc(k) = fftshift(ifftn(ifftshift(k), norm="ortho"))

over the last ``spatial_dims`` axes, so the zero frequency sits at index ``n // 2`` along each
axis (odd sizes included) and both transforms are unitary: ``ifftnc`` is the exact inverse *and*
the adjoint of ``fftnc``. Inputs must be complex: a real tensor is rejected rather than
transformed, because a ``(B, 2, H, W)`` two-channel image or a ``(..., 2)`` real/imaginary pair
would otherwise be transformed silently as two unrelated real images.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fft2c", "fftnc", "ifft2c", "ifftnc"]


def fftnc(x: Tensor, spatial_dims: int) -> Tensor:
    """Centred orthonormal FFT over the last ``spatial_dims`` axes.

    Maths: ``k = S F S^{-1} x`` with ``F`` the unitary DFT and ``S`` = ``fftshift``.

    Args:
        x: complex tensor ``(..., n_1, ..., n_d)`` with ``d = spatial_dims``.
        spatial_dims: how many trailing axes to transform (``>= 1``, at most ``x.ndim``).

    Returns:
        Complex tensor of the same shape and dtype, zero frequency at index ``n // 2``.

    Raises:
        TypeError: ``x`` is not a complex tensor.
        ValueError: ``spatial_dims`` is not an integer in ``[1, x.ndim]``.

    Examples:
        >>> x = torch.ones(4, 4, dtype=torch.complex64)
        >>> k = fftnc(x, 2)
        >>> float(k[2, 2].real), float(k.abs().sum() - k[2, 2].abs())
        (4.0, 0.0)
    """
    dims = _dims(x, spatial_dims, "fftnc")
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftnc(k: Tensor, spatial_dims: int) -> Tensor:
    """Centred orthonormal inverse FFT over the last ``spatial_dims`` axes (inverse and adjoint of ``fftnc``).

    Args:
        k: complex tensor ``(..., n_1, ..., n_d)``, zero frequency at index ``n // 2``.
        spatial_dims: how many trailing axes to transform (``>= 1``, at most ``k.ndim``).

    Returns:
        Complex tensor of the same shape and dtype.

    Raises:
        TypeError: ``k`` is not a complex tensor.
        ValueError: ``spatial_dims`` is not an integer in ``[1, k.ndim]``.

    Examples:
        >>> x = torch.randn(5, 3, dtype=torch.complex128)
        >>> torch.allclose(ifftnc(fftnc(x, 2), 2), x)
        True
    """
    dims = _dims(k, spatial_dims, "ifftnc")
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="ortho"), dim=dims)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over the last two axes (``fftnc(x, 2)``).

    Args:
        x: complex tensor ``(..., H, W)``.

    Returns:
        Complex k-space ``(..., H, W)``, zero frequency at ``(H // 2, W // 2)``.

    Examples:
        >>> x = torch.zeros(1, 1, 4, 4, dtype=torch.complex64); x[..., 2, 2] = 1
        >>> torch.allclose(fft2c(x).abs(), torch.full((1, 1, 4, 4), 0.25))
        True
    """
    return fftnc(x, 2)


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal inverse 2D FFT over the last two axes (``ifftnc(k, 2)``).

    Args:
        k: complex k-space ``(..., H, W)``, zero frequency at ``(H // 2, W // 2)``.

    Returns:
        Complex image ``(..., H, W)``.
    """
    return ifftnc(k, 2)


def _dims(x: Tensor, spatial_dims: int, who: str) -> tuple[int, ...]:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(
            f"{who}: input must be a complex tensor, got {x.dtype}; convert a real image with "
            "x.to(torch.complex64), or a (B, 2, ...) real/imaginary two-channel image with channels_to_complex(x)"
        )
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or not 1 <= spatial_dims <= x.ndim:
        raise ValueError(
            f"{who}: spatial_dims must be an integer in [1, {x.ndim}] (the input's ndim), got {spatial_dims!r}"
        )
    return tuple(range(-spatial_dims, 0))
