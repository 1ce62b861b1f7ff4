"""Circular (periodic) blur by FFT, 2D and 3D, and the kernels that drive it.

``Blur(kernel, shape)`` convolves every channel of a ``(B, C, H, W)`` or ``(B, C, D, H, W)``
image with the same point-spread function under periodic boundary conditions::

    y[i] = sum_j kernel[j] * x[(i - j + c) mod N],     c = kernel.shape // 2 (per axis)

so the kernel's centre is the element at index ``k // 2`` along each axis. This is the
convention of ``scipy.ndimage.convolve(x, kernel, mode="wrap")`` (``origin=0``), for odd *and*
even kernel sizes: an even-sized kernel has one more element before its centre than after it.

A circulant operator is diagonalised by the DFT, which gives a closed-form SVD
``A = U diag(s) V^H`` with ``V^H = F`` (the orthonormal FFT over the spatial axes),
``s = |K|`` and ``U = F^H diag(K / |K|)``, where ``K`` is the unnormalised FFT of the kernel
zero-padded to the image size with its centre moved to index 0 (the transfer function).

The transfer function is recomputed from the ``kernel`` buffer at each call, in the dtype of
the input: one real FFT of the padded kernel per call, and in exchange the state is just the
kernel, float64 inputs get the float64 DFT of the kernel, and nothing needs to stay in sync.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DecomposableOperator

__all__ = ["Blur", "box_kernel", "gaussian_kernel", "motion_kernel"]


class Blur(DecomposableOperator):
    """Circular convolution ``y = k ⊛ x`` with one kernel for every channel, by FFT.

    Maths: ``A = F^H diag(K) F`` with ``K = fftn(pad(kernel))`` (centre of the kernel at index 0);
    ``A^H = F^H diag(conj K) F`` is convolution with the flipped kernel (correlation).

    Args:
        kernel: ``(kh, kw)`` or ``(kd, kh, kw)`` real point-spread function, centred at index
            ``k // 2`` along each axis (the ``scipy.ndimage`` convention, even sizes included).
            It is used as given (not renormalised), so its sum is the gain at frequency zero.
        shape: ``x_shape`` without the batch dimension: ``(C, H, W)`` for a 2D kernel,
            ``(C, D, H, W)`` for a 3D kernel. Each spatial size must be at least the kernel's.

    Raises:
        TypeError: ``kernel`` is not a real tensor.
        ValueError: the kernel is not 2D or 3D, has NaN/Inf or is all zeros; ``shape`` does not
            have one more entry than the kernel has axes, has a size < 1, or is smaller than the
            kernel along some spatial axis.

    Examples:
        >>> op = Blur(gaussian_kernel(1.0), (1, 16, 16))
        >>> x = torch.zeros(1, 1, 16, 16); x[0, 0, 8, 8] = 1.0
        >>> torch.allclose(op(x)[0, 0, 5:12, 5:12], gaussian_kernel(1.0), atol=1e-6)
        True
    """

    def __init__(self, kernel: Tensor, shape: Sequence[int]) -> None:
        super().__init__()
        kernel = _check_kernel(kernel)
        x_shape = _check_shape(shape, kernel)
        self.register_buffer("kernel", kernel.detach().clone())
        self.x_shape = self.y_shape = x_shape
        self.spatial = x_shape[1:]
        self.dims = tuple(range(-len(self.spatial), 0))

    # ---- transfer function -------------------------------------------------------------
    def _padded_kernel(self, dtype: torch.dtype) -> Tensor:
        """The kernel zero-padded to the image size with its centre rolled to index 0."""
        k = self.kernel.to(dtype)
        pad: list[int] = []
        for n, m in zip(reversed(self.spatial), reversed(k.shape), strict=True):
            pad += [0, n - m]
        shifts = [-(m // 2) for m in k.shape]
        return torch.roll(F.pad(k, pad), shifts=shifts, dims=self.dims)

    def _rtransfer(self, dtype: torch.dtype) -> Tensor:
        """Half-spectrum transfer function ``rfftn(pad(kernel))``, shape ``(*spatial[:-1], W//2+1)``."""
        return torch.fft.rfftn(self._padded_kernel(dtype), dim=self.dims)

    def _transfer(self, dtype: torch.dtype) -> Tensor:
        """Full transfer function ``K = fftn(pad(kernel))``, shape ``spatial``."""
        return torch.fft.fftn(self._padded_kernel(dtype), dim=self.dims)

    def _phase(self, dtype: torch.dtype) -> Tensor:
        """``K / |K|``, with 1 where ``K == 0`` so that ``U`` stays unitary."""
        k = self._transfer(dtype)
        mag = k.abs()
        nonzero = mag > 0
        return torch.where(nonzero, k / torch.where(nonzero, mag, torch.ones_like(mag)), torch.ones_like(k))

    def _filter(self, x: Tensor, spectrum: Tensor) -> Tensor:
        """``irfftn(rfftn(x) * spectrum)`` over the spatial axes."""
        return torch.fft.irfftn(torch.fft.rfftn(x, dim=self.dims) * spectrum, s=self.spatial, dim=self.dims)

    # ---- linear operator -----------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Blur ``x``.

        Args:
            x: ``(B, *x_shape)`` real image.

        Returns:
            ``(B, *x_shape)``, same dtype as ``x``.
        """
        return self._filter(x, self._rtransfer(x.dtype))

    def adjoint(self, y: Tensor) -> Tensor:
        """``A^H y``: correlation with the kernel (convolution with the flipped kernel).

        Args:
            y: ``(B, *y_shape)`` real measurement.

        Returns:
            ``(B, *x_shape)``, same dtype as ``y``.
        """
        self.check_y(y)
        return self._filter(y, self._rtransfer(y.dtype).conj())

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x`` in one FFT pair: filtering with ``|K|^2``."""
        self.check_x(x)
        return self._filter(x, self._rtransfer(x.dtype).abs().square())

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """Truncated inverse filter ``x = F^H (conj K / |K|^2) F y`` where ``|K| > tol * max |K|``, else 0.

        This is the exact pseudo-inverse of the operator with singular values below the relative
        cutoff ``tol`` set to zero (``numpy.linalg.pinv``'s ``rcond``).

        Args:
            y: ``(B, *y_shape)`` real measurement.
            tol: relative singular-value cutoff, ``>= 0``.
            max_iter: unused (no iterations); kept for the ``LinearOperator.pinv`` signature.

        Returns:
            ``(B, *x_shape)``, same dtype as ``y``.

        Raises:
            ValueError: ``tol`` is negative or not finite.
        """
        self.check_y(y)
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        k = self._rtransfer(y.dtype)
        mag2 = k.abs().square()
        keep = mag2.sqrt() > tol * mag2.max().sqrt()
        inverse = torch.where(keep, k.conj() / torch.where(keep, mag2, torch.ones_like(mag2)), torch.zeros_like(k))
        return self._filter(y, inverse)

    # ---- SVD -----------------------------------------------------------------------------
    def singular_values(self) -> Tensor:
        """``|K|`` (in the kernel buffer's dtype), expanded to shape ``x_shape``."""
        return self._transfer(self.kernel.dtype).abs().expand(self.x_shape).contiguous()

    def v_adjoint(self, x: Tensor) -> Tensor:
        """``V^H x``: orthonormal FFT over the spatial axes; ``(B, *x_shape)`` complex."""
        self.check_x(x)
        return torch.fft.fftn(x, dim=self.dims, norm="ortho")

    def v(self, z: Tensor) -> Tensor:
        """``V z``: orthonormal inverse FFT, real part; ``(B, *x_shape)`` real."""
        self._check_spectral(z)
        return torch.fft.ifftn(z, dim=self.dims, norm="ortho").real

    def u_adjoint(self, y: Tensor) -> Tensor:
        """``U^H y = conj(K/|K|) F y``, zeroed where ``|K| == 0``; ``(B, *x_shape)`` complex."""
        self.check_y(y)
        yf = torch.fft.fftn(y, dim=self.dims, norm="ortho")
        k = self._transfer(y.dtype)
        mag = k.abs()
        nonzero = mag > 0
        return torch.where(
            nonzero, yf * (k / torch.where(nonzero, mag, torch.ones_like(mag))).conj(), torch.zeros_like(yf)
        )

    def u(self, z: Tensor) -> Tensor:
        """``U z = F^H ((K/|K|) z)``, real part; ``(B, *y_shape)`` real."""
        self._check_spectral(z)
        real = z.real.dtype if z.is_complex() else z.dtype
        return torch.fft.ifftn(self._phase(real) * z, dim=self.dims, norm="ortho").real

    def _check_spectral(self, z: Tensor) -> None:
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.ndim != len(self.x_shape) + 1 or tuple(z.shape[1:]) != self.x_shape:
            raise ValueError(
                f"z has shape {tuple(z.shape)}; Blur expects spectral coordinates (B, {', '.join(map(str, self.x_shape))})"
            )

    def extra_repr(self) -> str:
        return f"kernel_shape={tuple(self.kernel.shape)}, x_shape={self.x_shape}"


# ---- kernels ---------------------------------------------------------------------------------
def gaussian_kernel(sigma: float | Sequence[float], size: int | Sequence[int] | None = None, ndim: int = 2) -> Tensor:
    """Sampled Gaussian ``exp(-sum_a d_a^2 / (2 sigma_a^2))``, normalised to sum 1.

    Samples are taken at integer offsets ``d = i - size // 2`` from the kernel centre, the
    centre ``Blur`` uses, so the blur does not shift the image (for even sizes the kernel is
    truncated one sample earlier on the high side).

    Args:
        sigma: standard deviation in pixels, ``> 0``; one number, or one per axis (anisotropic).
        size: kernel size, one number or one per axis; default ``2 * ceil(3 sigma_a) + 1`` per axis.
        ndim: 2 or 3.

    Returns:
        ``size`` float32 tensor (2D or 3D) that sums to 1.

    Raises:
        ValueError: ``ndim`` not 2 or 3; ``sigma`` not > 0 and finite or of the wrong length;
            ``size`` not a positive integer or of the wrong length.

    Examples:
        >>> gaussian_kernel(1.0).shape
        torch.Size([7, 7])
        >>> gaussian_kernel((1.0, 2.0), size=(5, 9)).sum().item()
        1.0
    """
    ndim = _check_ndim(ndim)
    sigmas = _per_axis(sigma, ndim, "sigma")
    for s in sigmas:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"sigma must be a finite number > 0 (or one per axis), got {sigma!r}")
    sizes = [2 * math.ceil(3 * s) + 1 for s in sigmas] if size is None else _check_sizes(size, ndim)
    log_k = torch.zeros(sizes, dtype=torch.float64)
    for axis, (n, s) in enumerate(zip(sizes, sigmas, strict=True)):
        d = torch.arange(n, dtype=torch.float64) - n // 2
        view = [1] * ndim
        view[axis] = n
        log_k = log_k - (d / s).square().view(view) / 2
    k = log_k.exp()
    return (k / k.sum()).to(torch.float32)


def box_kernel(size: int | Sequence[int], ndim: int = 2) -> Tensor:
    """Uniform (moving-average) kernel, normalised to sum 1.

    Args:
        size: kernel size, one number or one per axis.
        ndim: 2 or 3.

    Returns:
        ``size`` float32 tensor with every entry ``1 / prod(size)``.

    Raises:
        ValueError: ``ndim`` not 2 or 3; ``size`` not a positive integer or of the wrong length.

    Examples:
        >>> box_kernel(2)
        tensor([[0.2500, 0.2500],
                [0.2500, 0.2500]])
    """
    ndim = _check_ndim(ndim)
    sizes = _check_sizes(size, ndim)
    return torch.full(sizes, 1.0 / math.prod(sizes), dtype=torch.float32)


def motion_kernel(size: int, generator: torch.Generator, intensity: float = 0.5, *, ndim: int = 2) -> Tensor:
    """Random camera-shake kernel: a smooth random trajectory rasterised into a ``size``-cube.

    The trajectory follows the usual model of hand shake (Levin et al. 2009; the "motion blur"
    task of DPS, Chung et al. 2023): a velocity with momentum, ``v_{t+1} = m v_t + sqrt(1 - m^2) e_t``
    with ``e_t ~ N(0, I)`` and ``m = 1 - intensity^2``, integrated over 32 steps. ``intensity = 0``
    gives a straight line, ``intensity = 1`` a Brownian scribble. The path is moved so that its
    time-average sits on the kernel centre ``size // 2`` (the blur does not shift the image on
    average), scaled so that it just fits in the kernel, sampled finely at equal time steps
    (the exposure spends equal time per sample) and splatted with multilinear weights.

    Args:
        size: kernel size along each axis, an integer ``>= 1``.
        generator: the source of randomness (required; the global RNG is never used).
        intensity: shake strength in ``[0, 1]``.
        ndim: 2 (default) or 3.

    Returns:
        ``(size,) * ndim`` float32 tensor, non-negative, summing to 1.

    Raises:
        TypeError: ``generator`` is not a ``torch.Generator``.
        ValueError: ``size`` not an integer >= 1, ``intensity`` outside ``[0, 1]``, ``ndim`` not 2 or 3.

    References:
        A. Levin, Y. Weiss, F. Durand, W. T. Freeman, "Understanding and evaluating blind
        deconvolution algorithms", CVPR 2009. H. Chung et al., "Diffusion posterior sampling for
        general noisy inverse problems", ICLR 2023 (61x61 kernels, intensity 0.5).

    Examples:
        >>> k = motion_kernel(15, torch.Generator().manual_seed(0))
        >>> k.shape, round(k.sum().item(), 5)
        (torch.Size([15, 15]), 1.0)
    """
    ndim = _check_ndim(ndim)
    try:
        size = _as_int(size)
    except TypeError:
        raise ValueError(f"size must be an integer >= 1, got {size!r}") from None
    if size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(intensity, bool) or not isinstance(intensity, (int, float)) or not 0 <= intensity <= 1:
        raise ValueError(f"intensity must be a number in [0, 1], got {intensity!r}")
    steps = 32
    momentum = 1.0 - float(intensity) ** 2
    noise = torch.randn((steps, ndim), dtype=torch.float64, generator=generator, device=generator.device).cpu()
    velocity = [noise[0]]
    for t in range(1, steps):
        velocity.append(momentum * velocity[-1] + math.sqrt(1.0 - momentum**2) * noise[t])
    path = torch.cat([torch.zeros(1, ndim, dtype=torch.float64), torch.stack(velocity).cumsum(0)])  # (steps + 1, ndim)
    # Equal time per segment, fine enough that consecutive samples are < 0.5 px apart after scaling.
    radius = (size - 1) // 2
    path = path - path.mean(0)  # provisional centring, only to measure the extent
    extent = path.abs().max()
    scale = radius / extent if extent > 0 else 0.0
    seg = (path[1:] - path[:-1]).norm(dim=1).max() * scale
    per_segment = max(1, math.ceil(float(seg) / 0.5) * 2)
    frac = torch.arange(per_segment, dtype=torch.float64) / per_segment
    fine = (path[:-1, None, :] + frac[None, :, None] * (path[1:] - path[:-1])[:, None, :]).reshape(-1, ndim)
    fine = torch.cat([fine, path[-1:]])
    # Centre on the time-average of the samples actually splatted: multilinear splatting keeps
    # the first moment, so the kernel's centre of mass is then exactly size // 2.
    fine = fine - fine.mean(0)
    extent = fine.abs().max()
    fine = fine * (radius / extent if extent > 0 else 0.0) + size // 2
    return _splat(fine, size, ndim)


def _splat(points: Tensor, size: int, ndim: int) -> Tensor:
    """Accumulate equal-weight points ``(N, ndim)`` onto a ``size``-cube with multilinear weights."""
    base = points.floor()
    frac = points - base
    base = base.long()
    out = torch.zeros(size**ndim, dtype=torch.float64)
    for corner in range(2**ndim):
        offset = torch.tensor([(corner >> a) & 1 for a in range(ndim)], dtype=torch.long)
        weight = torch.where(offset.bool(), frac, 1 - frac).prod(1)
        # A point on the upper edge has weight 0 on its outer neighbour; clamping keeps the index valid.
        index = (base + offset).clamp(0, size - 1)
        flat = torch.zeros(index.shape[0], dtype=torch.long)
        for a in range(ndim):
            flat = flat * size + index[:, a]
        out.index_add_(0, flat, weight)
    out = out.reshape((size,) * ndim)
    return (out / out.sum()).to(torch.float32)


# ---- validation ------------------------------------------------------------------------------
def _check_kernel(kernel: Tensor) -> Tensor:
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.is_complex():
        raise TypeError(f"kernel must be a real tensor, got dtype {kernel.dtype}")
    if not kernel.is_floating_point():
        kernel = kernel.to(torch.float32)
    if kernel.ndim not in (2, 3):
        raise ValueError(f"kernel must be 2D (kh, kw) or 3D (kd, kh, kw), got shape {tuple(kernel.shape)}")
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError(f"kernel must be finite, got NaN or Inf in a kernel of shape {tuple(kernel.shape)}")
    if not bool((kernel != 0).any()):
        raise ValueError(f"kernel must have a non-zero entry, got all zeros (shape {tuple(kernel.shape)})")
    return kernel


def _check_shape(shape: Sequence[int], kernel: Tensor) -> tuple[int, ...]:
    try:
        dims = tuple(_as_int(n) for n in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of integers (C, H, W) or (C, D, H, W), got {shape!r}") from None
    if any(n < 1 for n in dims):
        raise ValueError(f"shape must be a sequence of integers >= 1, got {shape!r}")
    expected = "(C, H, W)" if kernel.ndim == 2 else "(C, D, H, W)"
    if len(dims) != kernel.ndim + 1:
        raise ValueError(
            f"shape {dims} does not match the {kernel.ndim}D kernel of shape {tuple(kernel.shape)}; expected x_shape {expected}"
        )
    spatial = dims[1:]
    if any(m > n for m, n in zip(kernel.shape, spatial, strict=True)):
        raise ValueError(
            f"kernel of shape {tuple(kernel.shape)} is larger than the image {spatial} along some axis; crop the kernel"
        )
    return dims


def _check_ndim(ndim: int) -> int:
    if ndim not in (2, 3) or isinstance(ndim, bool):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    return int(ndim)


def _per_axis(value: float | Sequence[float], ndim: int, name: str) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value] * ndim
    try:
        values = list(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a number or a sequence of {ndim} numbers, got {value!r}") from None
    if len(values) != ndim:
        raise ValueError(f"{name} must be a number or a sequence of {ndim} numbers, got {value!r}")
    return values


def _check_sizes(size: int | Sequence[int], ndim: int) -> list[int]:
    sizes = _per_axis(size, ndim, "size")
    try:
        sizes = [_as_int(n) for n in sizes]
    except TypeError:
        sizes = [0]
    if any(n < 1 for n in sizes):
        raise ValueError(f"size must be an integer >= 1 (or one per axis), got {size!r}")
    return sizes


def _as_int(value: object) -> int:
    """``operator.index`` (ints, NumPy and 0-d torch integers) that also refuses ``bool``."""
    if isinstance(value, bool):
        raise TypeError("bool is not a size")
    return operator.index(value)  # type: ignore[arg-type]
