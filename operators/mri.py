"""Cartesian MRI: single-coil and multi-coil (SENSE) undersampled Fourier operators, 2D and 3D.

Images: a 2D slice is ``(B, 1, H, W)`` complex (``complex64``/``complex128``), or, with
``complex_channels=True``, ``(B, 2, H, W)`` real with the real and imaginary parts as channels
0 and 1 (the layout real-valued diffusion priors use). Volumes add a ``D`` axis:
``(B, 1, D, H, W)`` / ``(B, 2, D, H, W)``. The Fourier transform is the centred orthonormal
``fftnc`` over all spatial axes (2D FFT of a slice, 3D FFT of a volume).

Measurements follow fastMRI's masked k-space convention: ``y`` is complex on the **full**
k-space grid, ``(B, 1, *spatial)`` single-coil or ``(B, coils, *spatial)`` multi-coil, with
exact zeros where the mask is 0. The mask is stored as a 0/1 floating buffer of the full
spatial shape (so it follows ``.to(dtype)``); any mask broadcastable to the image grid is
accepted (a ``(W,)`` column mask, say) and expanded.

Adjoints: with a complex image, the Hermitian adjoint; with two real channels, the adjoint for
the real inner product ``Re <A x, y>``, i.e. the complex adjoint split back into its real and
imaginary channels. Every operator follows the dtype of its input (buffers are cast per call).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import DecomposableOperator, LinearOperator
from .fft import fftnc, ifftnc

__all__ = [
    "MRI",
    "MulticoilMRI",
    "SinglecoilMRI",
    "channels_to_complex",
    "complex_to_channels",
    "rss",
    "zero_filled",
]


class _CartesianMRI(LinearOperator):
    """Shared machinery: the mask buffer, the image layout and the measurement checks."""

    mask: Tensor
    spatial: tuple[int, ...]
    complex_channels: bool

    def _setup(self, mask: Tensor, spatial: tuple[int, ...], complex_channels: bool, coils: int) -> None:
        if not isinstance(complex_channels, bool):
            raise TypeError(f"{type(self).__name__}: complex_channels must be a bool, got {complex_channels!r}")
        self.register_buffer("mask", _check_mask(mask, spatial, type(self).__name__))
        self.spatial = spatial
        self.complex_channels = complex_channels
        self.x_shape = (2 if complex_channels else 1, *spatial)
        self.y_shape = (coils, *spatial)
        self.x_is_complex = not complex_channels
        self.y_is_complex = True

    @property
    def acceleration(self) -> float:
        """Achieved acceleration ``numel / #sampled`` of the mask."""
        count = float(self.mask.sum())
        return float("inf") if count == 0 else self.mask.numel() / count

    # ---- layout ------------------------------------------------------------------------------
    def _image(self, x: Tensor) -> Tensor:
        """``x`` as a complex ``(B, 1, *spatial)`` image."""
        return channels_to_complex(x) if self.complex_channels else x

    def _layout(self, z: Tensor) -> Tensor:
        """A complex ``(B, 1, *spatial)`` image in this operator's image layout."""
        return complex_to_channels(z) if self.complex_channels else z

    def _mask_for(self, t: Tensor) -> Tensor:
        return self.mask.to(device=t.device, dtype=t.real.dtype if t.is_complex() else t.dtype)

    # ---- checks with hints about the complex layout ------------------------------------------
    def check_x(self, x: Tensor, name: str = "x") -> None:
        owner = type(self).__name__
        if isinstance(x, Tensor) and x.is_complex() != self.x_is_complex:
            if self.complex_channels:
                hint = (
                    "this operator was built with complex_channels=True: pass (B, 2, ...) real/imaginary "
                    "channels (complex_to_channels(x))"
                )
            else:
                hint = (
                    "two real/imaginary channels (B, 2, ...)? build the operator with complex_channels=True, "
                    "or convert with channels_to_complex(x)"
                )
            kind = "real" if self.complex_channels else "complex"
            raise TypeError(f"{name} has dtype {x.dtype}; {owner} expects a {kind} image; {hint}")
        super().check_x(x, name)

    def check_y(self, y: Tensor, name: str = "y") -> None:
        if isinstance(y, Tensor) and not y.is_complex():
            raise TypeError(
                f"{name} has dtype {y.dtype}; {type(self).__name__} expects complex k-space "
                f"(B, {self.y_shape[0]}, ...), "
                "e.g. torch.complex64; real/imaginary parts stored as two channels or a last axis of 2? "
                "convert with channels_to_complex(y) or torch.view_as_complex(y)"
            )
        super().check_y(y, name)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, acceleration={self.acceleration:.3g}, complex_channels={self.complex_channels}"


class SinglecoilMRI(_CartesianMRI, DecomposableOperator):
    """Single-coil Cartesian MRI ``y = M ⊙ F x`` on a 2D slice or a 3D volume.

    Maths: ``A = diag(m) F`` with ``F`` the centred orthonormal DFT over the spatial axes and
    ``m`` in ``{0, 1}``. It is a partial isometry, so its SVD is closed-form: ``V^H = F``,
    ``s = m``, ``U = I`` (``u_adjoint`` also zeroes the unsampled entries, so spectral coordinates
    vanish where ``s`` does), and the pseudo-inverse is the zero-filled reconstruction
    ``A^+ y = A^H y = F^H (m ⊙ y)``. With ``complex_channels=True`` the same holds over the reals:
    spectral coordinates are the two channels ``(Re F z, Im F z)`` of ``z = x_0 + i x_1``,
    ``s = m`` repeated on both channels, and ``U`` packs the two channels back into complex
    k-space.

    Args:
        mask: ``{0, 1}`` (bool or real) sampling mask broadcastable to the image grid ``(H, W)``
            or ``(D, H, W)``, e.g. from ``random_column_mask``; stored expanded to the full grid.
        image_shape: the image grid ``(H, W)`` or ``(D, H, W)``; defaults to ``mask.shape``.
        complex_channels: image as ``(B, 2, *spatial)`` real channels instead of
            ``(B, 1, *spatial)`` complex.

    Shapes: ``x``: ``(B, 1, *spatial)`` complex or ``(B, 2, *spatial)`` real;
    ``y``: ``(B, 1, *spatial)`` complex, zero where the mask is 0.

    Raises:
        TypeError: ``mask`` is not a real/bool tensor; at call time, a wrong image or k-space
            dtype (with a hint about the two-channel layout).
        ValueError: ``mask`` not 0/1, NaN/Inf, or not broadcastable to ``image_shape``.

    Examples:
        >>> from invdiff.operators.kspace_masks import random_column_mask
        >>> op = SinglecoilMRI(random_column_mask((8, 8), 2, 0.25, generator=torch.Generator().manual_seed(0)))
        >>> x = torch.randn(1, 1, 8, 8, dtype=torch.complex64)
        >>> y = op(x)
        >>> bool((y[0, 0][op.mask == 0] == 0).all()), torch.allclose(op(op.pinv(y)), y, atol=1e-6)
        (True, True)
    """

    def __init__(self, mask: Tensor, image_shape: Sequence[int] | None = None, complex_channels: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        if not isinstance(mask, Tensor):
            raise TypeError(f"{owner}: mask must be a torch.Tensor, got {type(mask).__name__}")
        spatial = _check_spatial(tuple(mask.shape) if image_shape is None else image_shape, owner, "image_shape")
        self._setup(mask, spatial, complex_channels, coils=1)

    def forward(self, x: Tensor) -> Tensor:
        z = self._image(x)
        k = fftnc(z, len(self.spatial))
        return k * self._mask_for(k)

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return self._layout(ifftnc(y * self._mask_for(y), len(self.spatial)))

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """Zero-filled reconstruction ``F^H (m ⊙ y)`` (exact: ``A`` is a partial isometry)."""
        self.check_y(y)
        return self.adjoint(y)

    # ---- SVD -------------------------------------------------------------------------------
    def singular_values(self) -> Tensor:
        s = self.mask.unsqueeze(0)
        return s.expand(2, *self.spatial) if self.complex_channels else s

    def v_adjoint(self, x: Tensor) -> Tensor:
        k = fftnc(self._image(x), len(self.spatial))
        return complex_to_channels(k) if self.complex_channels else k

    def v(self, z: Tensor) -> Tensor:
        k = channels_to_complex(z) if self.complex_channels else z
        return self._layout(ifftnc(k, len(self.spatial)))

    def u_adjoint(self, y: Tensor) -> Tensor:
        y = y * self._mask_for(y)
        return complex_to_channels(y) if self.complex_channels else y

    def u(self, z: Tensor) -> Tensor:
        return channels_to_complex(z) if self.complex_channels else z


class MulticoilMRI(_CartesianMRI):
    """Multi-coil Cartesian MRI (SENSE): ``y_c = M ⊙ F (S_c x)`` for every coil ``c``.

    Maths: ``A x = [m ⊙ F(S_c x)]_c``; ``A^H y = sum_c conj(S_c) F^H (m ⊙ y_c)`` (the
    coil-combined zero-filled image). No closed-form SVD; ``pinv`` is conjugate gradients on the
    normal equations (inherited). With maps normalised to ``sum_c |S_c|^2 = 1`` (``birdcage_maps``,
    ESPIRiT inside the object) and a full mask, ``A^H A = I``.

    Args:
        mask: ``{0, 1}`` sampling mask broadcastable to the image grid, shared by all coils.
        coil_maps: complex sensitivities ``(coils, H, W)`` or ``(coils, D, H, W)``; they define the
            image grid. Real maps are accepted and promoted to complex. Stored with
            ``register_complex_buffer`` (``coil_maps_ri``); read them with ``op.coil_maps``.
        complex_channels: image as ``(B, 2, *spatial)`` real channels instead of
            ``(B, 1, *spatial)`` complex.

    Shapes: ``x``: ``(B, 1, *spatial)`` complex or ``(B, 2, *spatial)`` real;
    ``y``: ``(B, coils, *spatial)`` complex, zero where the mask is 0.

    Raises:
        TypeError: ``mask``/``coil_maps`` not tensors; at call time, a wrong image or k-space dtype.
        ValueError: ``coil_maps`` not 3D/4D or with NaN/Inf; ``mask`` not 0/1, NaN/Inf or not
            broadcastable to the coil maps' grid.

    Examples:
        >>> from invdiff.operators.coil_maps import birdcage_maps
        >>> op = MulticoilMRI(torch.ones(8, 8), birdcage_maps((8, 8), 4))
        >>> x = torch.randn(2, 1, 8, 8, dtype=torch.complex64)
        >>> op(x).shape, torch.allclose(op.adjoint(op(x)), x, atol=1e-5)
        (torch.Size([2, 4, 8, 8]), True)
    """

    def __init__(self, mask: Tensor, coil_maps: Tensor, complex_channels: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        if not isinstance(mask, Tensor):
            raise TypeError(f"{owner}: mask must be a torch.Tensor, got {type(mask).__name__}")
        maps = _check_coil_maps(coil_maps, owner)
        spatial = tuple(maps.shape[1:])
        if mask.ndim > len(spatial):
            raise ValueError(
                f"{owner}: mask has shape {tuple(mask.shape)} but the coil maps {tuple(maps.shape)} give the image "
                f"grid {spatial}; the mask must be broadcastable to {spatial}"
            )
        self._setup(mask, spatial, complex_channels, coils=maps.shape[0])
        self.register_complex_buffer("coil_maps", maps)

    @property
    def coil_maps(self) -> Tensor:
        """Complex sensitivities ``(coils, *spatial)``."""
        return self.complex_buffer("coil_maps")

    @property
    def coils(self) -> int:
        return self.y_shape[0]

    def _maps_for(self, z: Tensor) -> Tensor:
        return self.coil_maps.to(device=z.device, dtype=z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        z = self._image(x)
        k = fftnc(z * self._maps_for(z), len(self.spatial))
        return k * self._mask_for(k)

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_y(y)
        images = ifftnc(y * self._mask_for(y), len(self.spatial))
        return self._layout((images * self._maps_for(images).conj()).sum(1, keepdim=True))


# ---- helpers -------------------------------------------------------------------------------------
def complex_to_channels(z: Tensor) -> Tensor:
    """Complex ``(B, C, ...)`` -> real ``(B, 2C, ...)``: real parts in channels ``[0, C)``, imaginary
    parts in ``[C, 2C)`` (for the usual ``C = 1``: channel 0 real, channel 1 imaginary).

    Examples:
        >>> complex_to_channels(torch.tensor([[1 + 2j]])).tolist()
        [[1.0, 2.0]]
    """
    if not isinstance(z, Tensor) or not z.is_complex():
        got = z.dtype if isinstance(z, Tensor) else type(z).__name__
        raise TypeError(f"complex_to_channels: z must be a complex tensor (B, C, ...), got {got}")
    if z.ndim < 2:
        raise ValueError(
            f"complex_to_channels: z must have a batch and a channel axis (B, C, ...), got shape {tuple(z.shape)}"
        )
    return torch.cat([z.real, z.imag], dim=1)


def channels_to_complex(x: Tensor) -> Tensor:
    """Real ``(B, 2C, ...)`` -> complex ``(B, C, ...)``: the inverse of ``complex_to_channels``.

    Examples:
        >>> channels_to_complex(torch.tensor([[1.0, 2.0]])).tolist()
        [[(1+2j)]]
    """
    if not isinstance(x, Tensor) or x.is_complex() or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"channels_to_complex: x must be a real floating tensor (B, 2C, ...), got {got}")
    if x.ndim < 2 or x.shape[1] % 2:
        raise ValueError(
            f"channels_to_complex: x must have an even number of channels (B, 2C, ...) (real parts, then imaginary "
            f"parts), got shape {tuple(x.shape)}"
        )
    c = x.shape[1] // 2
    return torch.complex(x[:, :c], x[:, c:])


def zero_filled(y: Tensor) -> Tensor:
    """Zero-filled coil images ``F^H y`` of masked k-space.

    Args:
        y: complex k-space ``(B, coils, H, W)`` (2D) or ``(B, coils, D, H, W)`` (3D); the
            number of spatial axes is ``y.ndim - 2``.

    Returns:
        Complex coil images of the same shape (combine with ``rss`` or with ``MulticoilMRI.adjoint``).

    Raises:
        TypeError: ``y`` is not complex.
        ValueError: ``y`` is not 4D or 5D.

    Examples:
        >>> y = torch.zeros(1, 1, 4, 4, dtype=torch.complex64); y[..., 2, 2] = 4
        >>> torch.allclose(zero_filled(y), torch.ones(1, 1, 4, 4, dtype=torch.complex64))
        True
    """
    if not isinstance(y, Tensor) or not y.is_complex():
        got = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise TypeError(
            f"zero_filled: y must be complex k-space (B, coils, H, W) or (B, coils, D, H, W), got {got}; "
            "real/imaginary channels? convert with channels_to_complex(y)"
        )
    if y.ndim not in (4, 5):
        raise ValueError(
            f"zero_filled: y must have shape (B, coils, H, W) or (B, coils, D, H, W), got {tuple(y.shape)}"
        )
    return ifftnc(y, y.ndim - 2)


def rss(images: Tensor, dim: int = 1, keepdim: bool = True) -> Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` (real, non-negative).

    Args:
        images: coil images ``(B, coils, ...)``, complex or real.
        dim: the coil axis.
        keepdim: keep it as a singleton (``(B, 1, ...)``, the image layout).

    Examples:
        >>> rss(torch.tensor([[3.0 + 0j, 4j]])).tolist()
        [[5.0]]
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"rss: images must be a torch.Tensor, got {type(images).__name__}")
    return images.abs().pow(2).sum(dim=dim, keepdim=keepdim).sqrt()


# ---- validation -------------------------------------------------------------------------------------
def _check_spatial(shape: Sequence[int], owner: str, name: str) -> tuple[int, ...]:
    try:
        spatial = tuple(shape)
    except TypeError:
        spatial = ()
    if len(spatial) not in (2, 3) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in spatial
    ):
        raise ValueError(f"{owner}: {name} must be (H, W) or (D, H, W) positive integers, got {shape!r}")
    return spatial


def _check_mask(mask: Tensor, spatial: tuple[int, ...], owner: str) -> Tensor:
    if not isinstance(mask, Tensor) or mask.is_complex():
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"{owner}: mask must be a real or bool tensor, got {got}")
    m = mask.detach()
    if m.is_floating_point() and not bool(torch.isfinite(m).all()):
        raise ValueError(f"{owner}: mask contains NaN or Inf")
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(
            f"{owner}: mask must contain only 0 and 1 (False/True), got values in [{float(m.min())}, {float(m.max())}]"
        )
    try:
        full = torch.broadcast_shapes(tuple(m.shape), spatial)
    except RuntimeError:
        full = None
    if full != spatial:
        raise ValueError(
            f"{owner}: mask has shape {tuple(m.shape)}, which does not broadcast to the image grid {spatial}; "
            "pass a mask of the grid's shape (or a (W,) column mask)"
        )
    dtype = m.dtype if m.is_floating_point() else torch.get_default_dtype()
    return m.to(dtype).expand(spatial).clone()


def _check_coil_maps(coil_maps: Tensor, owner: str) -> Tensor:
    if not isinstance(coil_maps, Tensor):
        raise TypeError(f"{owner}: coil_maps must be a torch.Tensor, got {type(coil_maps).__name__}")
    if coil_maps.ndim not in (3, 4) or coil_maps.shape[0] < 1 or min(coil_maps.shape) < 1:
        raise ValueError(
            f"{owner}: coil_maps must have shape (coils, H, W) or (coils, D, H, W) with positive sizes, "
            f"got {tuple(coil_maps.shape)}"
        )
    maps = coil_maps.detach()
    if not maps.is_complex():
        if not maps.is_floating_point():
            raise TypeError(f"{owner}: coil_maps must be a complex (or real floating) tensor, got {maps.dtype}")
        maps = maps.to(torch.complex128 if maps.dtype == torch.float64 else torch.complex64)
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise ValueError(f"{owner}: coil_maps contains NaN or Inf")
    return maps


def MRI(mask: Tensor, coil_maps: Tensor | None = None, complex_channels: bool = False) -> SinglecoilMRI | MulticoilMRI:  # noqa: N802
    """Cartesian MRI: ``SinglecoilMRI`` without ``coil_maps``, ``MulticoilMRI`` (SENSE) with them."""
    if coil_maps is None:
        return SinglecoilMRI(mask, complex_channels=complex_channels)
    return MulticoilMRI(mask, coil_maps, complex_channels=complex_channels)
