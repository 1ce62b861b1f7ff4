"""Hyperspectral forward models on cubes ``(B, bands, H, W)``, each with an exact SVD.

- ``SpectralResponse``: bands -> channels through a spectral response function (SRF) matrix
  ``R`` ``(channels, bands)``, the same at every pixel (HSI -> RGB / multispectral). ``A = R ⊗ I``;
  SVD from the SVD of the small matrix ``R``.
- ``HyperspectralSuperResolution``: per-band Gaussian spatial blur followed by decimation by an integer
  factor, one 1-D matrix per spatial axis (a ``SeparableOperator``), exact SVD via Kronecker products.
- ``BandCompletion`` / ``PixelCompletion``: binary masks over whole bands, pixels (all bands of a
  pixel) or single voxels of the cube (``MaskOperator``: ``U = V = I``, singular values = mask). As
  with ``Inpainting``, ``y`` has the full cube shape with zeros at the missing entries.
- ``HyperspectralDenoising``: the identity (``y = x``; noise is added by the noise model).

SRF helpers (no downloads): ``gaussian_srf`` (Gaussian camera/multispectral responses at given centres),
``camera_rgb_srf`` (a typical 3-channel camera) and ``cie_xyz_srf`` (the CIE 1931 2° colour matching
functions from the analytic multi-lobe fit of Wyman, Sloan and Shirley, JCGT 2(2), 2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import DecomposableOperator
from .downsampling import Boundary, check_factor, check_image_shape, resampling_matrix
from .masking import MaskOperator, validate_mask
from .separable import KroneckerOperator, SeparableOperator

__all__ = [
    "BandCompletion",
    "HyperspectralDenoising",
    "HyperspectralSuperResolution",
    "PixelCompletion",
    "SpectralResponse",
    "camera_rgb_srf",
    "cie_xyz_srf",
    "gaussian_decimation_matrix",
    "gaussian_srf",
]

_CUBE = "(bands, H, W)"


class SpectralResponse(KroneckerOperator):
    """``y[c] = sum_b srf[c, b] x[b]`` at every pixel: a cube ``(bands, H, W)`` to ``(channels, H, W)``.

    Linear with the exact adjoint ``srf^T``; SVD ``srf = U S V^T`` applied along the band axis
    (spectral coordinates have the cube's shape; singular values are zero-padded to ``bands``).

    Args:
        srf: real ``(channels, bands)`` matrix (rows: the response of each output channel per band),
            finite; e.g. from ``gaussian_srf`` or ``cie_xyz_srf``.
        spatial_shape: ``(H, W)``.

    Shapes:
        x: ``(B, bands, H, W)`` -> y: ``(B, channels, H, W)``, real.

    Raises:
        TypeError: ``srf`` is not a real tensor.
        ValueError: ``srf`` is not 2-D or holds NaN/Inf; bad ``spatial_shape``.

    Examples:
        >>> srf = gaussian_srf(torch.linspace(400, 700, 31), centres=[450, 550, 650], fwhm=60)
        >>> SpectralResponse(srf, (8, 8)).y_shape
        (3, 8, 8)
    """

    def __init__(self, srf: Tensor, spatial_shape: Sequence[int]) -> None:
        if not isinstance(srf, Tensor):
            raise TypeError(f"srf must be a torch.Tensor of shape (channels, bands), got {type(srf).__name__}")
        if srf.is_complex() or srf.dtype == torch.bool:
            raise TypeError(f"srf must be a real floating-point tensor, got dtype {srf.dtype}")
        if srf.ndim != 2 or srf.shape[0] < 1 or srf.shape[1] < 1:
            raise ValueError(f"srf must be a 2-D (channels, bands) matrix, got shape {tuple(srf.shape)}")
        if srf.is_floating_point() and not bool(torch.isfinite(srf).all()):
            raise ValueError("srf contains NaN or Inf; every entry of the (channels, bands) matrix must be finite")
        spatial = check_image_shape(spatial_shape, "(H, W)", (2,))
        super().__init__((int(srf.shape[1]), *spatial), [srf, None, None])
        self.channels, self.bands = int(srf.shape[0]), int(srf.shape[1])

    @property
    def srf(self) -> Tensor:
        """The ``(channels, bands)`` SRF matrix (float64 buffer unless moved)."""
        return self.matrix_0


class HyperspectralSuperResolution(SeparableOperator):
    """Per-band Gaussian spatial blur, then decimation by an integer factor (the HSI-SR forward model).

    Along each spatial axis, low-resolution sample ``i`` is the Gaussian-weighted mean of the input
    around the centre of its block, ``c_i = i f + (f - 1) / 2``: weights ``exp(-(j - c_i)^2 / (2 sigma^2))``
    over ``|j - c_i| <= r = int(truncate * sigma + 1/2)`` (``r + 1/2`` for even ``f``), normalised to sum to 1, with the boundary folded in
    (``"reflect"``: half-sample symmetric, like SciPy ``gaussian_filter(mode='reflect')``). For odd ``f``
    this equals ``scipy.ndimage.gaussian_filter(x, sigma, mode='reflect', truncate=truncate)`` sampled at
    ``[(f-1)/2::f]``; for even ``f`` the centres fall between pixels and the kernel is sampled at
    half-integer offsets. The same 1-D matrix acts on H and W (``A = I_bands ⊗ A_H ⊗ A_W``).

    Args:
        shape: cube shape ``(bands, H, W)``; ``H`` and ``W`` multiples of ``factor``.
        factor: integer >= 1 (or one per spatial axis).
        blur_sigma: Gaussian standard deviation in high-resolution pixels, > 0; ``None`` gives a
            full width at half maximum of ``factor`` pixels, ``sigma = f / (2 sqrt(2 ln 2))``.
        truncate: kernel radius in standard deviations.
        boundary: ``"reflect"``, ``"periodic"`` or ``"truncate"``.

    Shapes:
        x: ``(B, bands, H, W)`` -> y: ``(B, bands, H / f, W / f)``, real.

    Raises:
        ValueError: bad shape or factor, a size not divisible by the factor, ``blur_sigma`` or
            ``truncate`` not a positive finite number.
    """

    def __init__(
        self,
        shape: Sequence[int],
        factor: int | Sequence[int],
        blur_sigma: float | None = None,
        *,
        truncate: float = 4.0,
        boundary: Boundary = "reflect",
    ) -> None:
        shape = check_image_shape(shape, _CUBE, (3,))
        factors = check_factor(factor, 2)
        for n, f in zip(shape[1:], factors, strict=True):
            if n % f:
                raise ValueError(
                    f"shape {shape} is not divisible by factor {factor!r}: spatial size {n} is not a multiple of {f}; "
                    "crop or pad the cube to a multiple of the factor"
                )
        sigmas = [f / (2 * math.sqrt(2 * math.log(2))) if blur_sigma is None else blur_sigma for f in factors]
        _check_positive_number(blur_sigma if blur_sigma is not None else sigmas[0], "blur_sigma")
        _check_positive_number(truncate, "truncate")
        matrices = [
            gaussian_decimation_matrix(n, f, s, truncate=truncate, boundary=boundary)
            for n, f, s in zip(shape[1:], factors, sigmas, strict=True)
        ]
        super().__init__(matrices, channels=shape[0])
        self.factor, self.blur_sigma, self.boundary = factors, tuple(sigmas), boundary

    def extra_repr(self) -> str:
        return (
            f"x_shape={self.x_shape}, y_shape={self.y_shape}, factor={self.factor}, "
            f"blur_sigma={self.blur_sigma}, boundary={self.boundary!r}"
        )


class BandCompletion(MaskOperator):
    """Whole bands missing: ``y = m ⊙ x`` with ``m[b] = 0`` for the missing bands, 1 elsewhere.

    Args:
        shape: cube shape ``(bands, H, W)``.
        missing_bands: distinct band indices in ``[0, bands)`` (may be empty).

    Shapes:
        x, y: ``(B, bands, H, W)``; ``y`` is zero on the missing bands.

    Raises:
        ValueError: bad shape; an index out of range, repeated, or not an int.
    """

    def __init__(self, shape: Sequence[int], missing_bands: Sequence[int]) -> None:
        shape = check_image_shape(shape, _CUBE, (3,))
        bands = shape[0]
        if isinstance(missing_bands, Tensor):
            missing_bands = missing_bands.tolist()
        if not isinstance(missing_bands, Sequence) or any(
            isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < bands for b in missing_bands
        ):
            raise ValueError(f"missing_bands must be a sequence of band indices in [0, {bands}), got {missing_bands!r}")
        if len(set(missing_bands)) != len(missing_bands):
            raise ValueError(f"missing_bands must not repeat an index, got {list(missing_bands)!r}")
        mask = torch.ones(bands, 1, 1, dtype=torch.bool)
        mask[list(missing_bands)] = False
        super().__init__(mask, shape)
        self.missing_bands = tuple(int(b) for b in missing_bands)


class PixelCompletion(MaskOperator):
    """Missing pixels (every band of a pixel) or missing voxels (single band-pixel entries) of a cube.

    Args:
        shape: cube shape ``(bands, H, W)``.
        mask: ``bool`` or 0/1, ``True`` = observed: ``(H, W)`` for whole pixels (the same for every
            band) or ``(bands, H, W)`` for individual voxels; e.g. from ``random_pixel_mask``.

    Shapes:
        x, y: ``(B, bands, H, W)``; ``y`` is zero at the missing entries.

    Raises:
        ValueError: bad shape; a mask whose shape is neither ``(H, W)`` nor ``(bands, H, W)``, or with
            NaN/Inf or values other than 0/1.
    """

    def __init__(self, shape: Sequence[int], mask: Tensor) -> None:
        shape = check_image_shape(shape, _CUBE, (3,))
        checked = validate_mask(mask)
        if tuple(checked.shape) not in (shape[1:], shape):
            raise ValueError(
                f"mask must have shape (H, W) = {shape[1:]} or (bands, H, W) = {shape}, got {tuple(checked.shape)}"
            )
        super().__init__(checked, shape)


class HyperspectralDenoising(DecomposableOperator):
    """The identity on a cube, ``y = x`` (a copy); ``U = V = I``, all singular values 1.

    Args:
        shape: cube shape ``(bands, H, W)``.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.x_shape = self.y_shape = check_image_shape(shape, _CUBE, (3,))
        # Follows .to() so that singular_values() lands on the operator's device and dtype.
        self.register_buffer("_ref", torch.zeros((), dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x.clone()

    def adjoint(self, y: Tensor) -> Tensor:
        return y.clone()

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        self.check_y(y)
        return y.clone()

    def singular_values(self) -> Tensor:
        return torch.ones((), dtype=self._ref.dtype, device=self._ref.device).expand(self.x_shape)

    def v_adjoint(self, x: Tensor) -> Tensor:
        return x

    def v(self, z: Tensor) -> Tensor:
        return z

    def u_adjoint(self, y: Tensor) -> Tensor:
        return y

    def u(self, z: Tensor) -> Tensor:
        return z


# ---- 1-D matrices and SRFs ---------------------------------------------------------------------
def gaussian_decimation_matrix(
    n: int, factor: int, sigma: float, *, truncate: float = 4.0, boundary: Boundary = "reflect"
) -> Tensor:
    """``(n // factor, n)`` float64 matrix: Gaussian blur (std ``sigma``) sampled at the block centres.

    See ``HyperspectralSuperResolution`` for the conventions.
    """
    (f,) = check_factor(factor, 1)
    if n % f:
        raise ValueError(f"n {n} is not divisible by factor {f}")
    _check_positive_number(sigma, "sigma")
    _check_positive_number(truncate, "truncate")
    radius = int(truncate * sigma + 0.5)
    centres = torch.arange(n // f, dtype=torch.float64) * f + (f - 1) / 2
    taps = torch.floor(centres).long()[:, None] + torch.arange(-radius - 1, radius + 2)[None, :]
    d = taps - centres[:, None]
    # Even factors put the centre between pixels: keep the half-integer offsets up to radius + 1/2.
    support = radius + (0.5 if f % 2 == 0 else 0.0)
    weights = torch.where(d.abs() <= support, torch.exp(-0.5 * (d / sigma) ** 2), torch.zeros_like(d))
    return resampling_matrix(taps, weights, n, boundary)


def gaussian_srf(
    wavelengths: Tensor | Sequence[float],
    centres: Tensor | Sequence[float],
    fwhm: float | Sequence[float],
    *,
    normalize: bool = True,
) -> Tensor:
    """Gaussian spectral responses ``exp(-(lambda - centre)^2 / (2 s^2))``, ``s = fwhm / (2 sqrt(2 ln 2))``.

    Args:
        wavelengths: band centres of the cube, ``(bands,)`` (any unit, e.g. nm).
        centres: peak wavelength of each output channel, ``(channels,)``, same unit.
        fwhm: full width at half maximum, one for all channels or ``(channels,)``, > 0.
        normalize: scale each row to sum to 1, so a flat unit spectrum maps to 1 in every channel.

    Returns:
        ``(channels, bands)`` float64 SRF matrix.

    Raises:
        ValueError: empty or non-finite inputs, ``fwhm`` <= 0, a row that sums to 0 when normalising.
    """
    lam = _vector(wavelengths, "wavelengths")
    mu = _vector(centres, "centres")
    width = _vector([fwhm] * mu.numel() if isinstance(fwhm, (int, float)) else fwhm, "fwhm")
    if width.numel() != mu.numel() or bool((width <= 0).any()):
        raise ValueError(f"fwhm must be > 0, one value or one per centre ({mu.numel()}), got {fwhm!r}")
    s = width / (2 * math.sqrt(2 * math.log(2)))
    srf = torch.exp(-0.5 * ((lam[None, :] - mu[:, None]) / s[:, None]) ** 2)
    return _normalize_rows(srf, "gaussian_srf") if normalize else srf


def camera_rgb_srf(wavelengths: Tensor | Sequence[float], *, normalize: bool = True) -> Tensor:
    """A typical 3-channel (R, G, B) camera: Gaussian responses at 600, 540 and 460 nm, FWHM 80, 70, 60 nm.

    ``wavelengths`` in nm; returns ``(3, bands)`` float64 (rows sum to 1 when ``normalize``).
    """
    return gaussian_srf(wavelengths, [600.0, 540.0, 460.0], [80.0, 70.0, 60.0], normalize=normalize)


def cie_xyz_srf(wavelengths: Tensor | Sequence[float], *, normalize: bool = True) -> Tensor:
    """CIE 1931 2° colour matching functions (x̄, ȳ, z̄) at ``wavelengths`` (nm), as a ``(3, bands)`` SRF.

    Uses the multi-lobe piecewise-Gaussian fit of Wyman, Sloan and Shirley (JCGT 2(2), 2013, Eq. 2),
    within about 0.01 of the tabulated CIE values (peaks: x̄ 1.06, ȳ 1.0, z̄ 1.78).

    Args:
        wavelengths: band centres in nm, ``(bands,)``.
        normalize: divide all three rows by ``sum(ȳ)`` so that a flat unit spectrum has ``Y = 1``
            (keeps the ratios between X, Y and Z).

    Returns:
        ``(3, bands)`` float64.
    """
    lam = _vector(wavelengths, "wavelengths")

    def lobe(mu: float, s_left: float, s_right: float) -> Tensor:
        s = torch.where(lam < mu, torch.full_like(lam, s_left), torch.full_like(lam, s_right))
        return torch.exp(-0.5 * ((lam - mu) / s) ** 2)

    x = 1.056 * lobe(599.8, 37.9, 31.0) + 0.362 * lobe(442.0, 16.0, 26.7) - 0.065 * lobe(501.1, 20.4, 26.2)
    y = 0.821 * lobe(568.8, 46.9, 40.5) + 0.286 * lobe(530.9, 16.3, 31.1)
    z = 1.217 * lobe(437.0, 11.8, 36.0) + 0.681 * lobe(459.0, 26.0, 13.8)
    srf = torch.stack([x, y, z])
    if normalize:
        total = float(y.sum())
        if total <= 0:
            raise ValueError(f"cie_xyz_srf: ȳ sums to {total} over wavelengths {lam.tolist()}; cannot normalise")
        srf = srf / total
    return srf


# ---- helpers ---------------------------------------------------------------------------------------
def _vector(values: object, name: str) -> Tensor:
    if isinstance(values, Tensor):
        if values.is_complex():
            raise TypeError(f"{name} must be real, got dtype {values.dtype}")
        t = values.detach().to(torch.float64).flatten().cpu()
    else:
        try:
            t = torch.as_tensor(values, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from err
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers, got {values!r}")
    return t


def _normalize_rows(srf: Tensor, who: str) -> Tensor:
    sums = srf.sum(dim=1, keepdim=True)
    if bool((sums <= 0).any()):
        raise ValueError(f"{who}: a channel has zero response over the given wavelengths; cannot normalise")
    return srf / sums


def _check_positive_number(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
