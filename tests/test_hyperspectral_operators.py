"""Hyperspectral operators: spectral response, super-resolution, band/pixel completion, denoising.

Oracles from outside the project: NumPy ``einsum``, ``scipy.ndimage.gaussian_filter`` (odd factors),
an independent NumPy blur-and-sample loop (even factors), dense ``torch.linalg.svdvals`` /
``torch.linalg.pinv``, and tabulated CIE 1931 2° colour matching function values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from invdiff.operators.hyperspectral import (
    BandCompletion,
    HyperspectralDenoising,
    HyperspectralSuperResolution,
    PixelCompletion,
    SpectralResponse,
    camera_rgb_srf,
    cie_xyz_srf,
    gaussian_decimation_matrix,
    gaussian_srf,
)
from invdiff.operators.masking import random_pixel_mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense(op: torch.nn.Module) -> torch.Tensor:
    n = math.prod(op.x_shape)
    return op(torch.eye(n, dtype=torch.float64).reshape(n, *op.x_shape)).reshape(n, -1).T


# ---- spectral response ---------------------------------------------------------------------------
@pytest.mark.parametrize("channels,bands", [(3, 16), (6, 4)], ids=["rgb_from_16", "more_channels_than_bands"])
def test_spectral_response_matches_numpy(channels: int, bands: int) -> None:
    srf = torch.rand(channels, bands, dtype=torch.float64, generator=gen(0))
    op = SpectralResponse(srf, (5, 7))
    x = torch.randn(2, bands, 5, 7, dtype=torch.float64, generator=gen(1))
    y = torch.randn(2, channels, 5, 7, dtype=torch.float64, generator=gen(2))
    np.testing.assert_allclose(op(x).numpy(), np.einsum("cb,nbhw->nchw", srf.numpy(), x.numpy()), rtol=1e-13)
    np.testing.assert_allclose(op.adjoint(y).numpy(), np.einsum("cb,nchw->nbhw", srf.numpy(), y.numpy()), rtol=1e-13)
    assert op.x_shape == (bands, 5, 7) and op.y_shape == (channels, 5, 7)
    # Singular values: those of the small SRF, each repeated at every pixel, zero-padded to `bands`.
    s = op.singular_values()
    assert s.shape == (bands, 5, 7)
    ref = torch.linalg.svdvals(srf)
    torch.testing.assert_close(s[: ref.numel(), 0, 0], ref)
    assert bool((s[ref.numel():] == 0).all())
    ref_pinv = torch.einsum("bc,nchw->nbhw", torch.linalg.pinv(srf), y)
    torch.testing.assert_close(op.pinv(y), ref_pinv, rtol=1e-9, atol=1e-9)


def test_spectral_response_float32_input() -> None:
    op = SpectralResponse(camera_rgb_srf(torch.linspace(400, 700, 8)), (4, 4))
    x = torch.rand(1, 8, 4, 4, generator=gen(3))
    assert op(x).dtype == torch.float32 and op.adjoint(op(x)).dtype == torch.float32


# ---- SRF helpers ----------------------------------------------------------------------------------------
def test_gaussian_srf_peak_and_fwhm() -> None:
    lam = torch.arange(400.0, 701.0, 1.0)
    srf = gaussian_srf(lam, [450.0, 550.0], [40.0, 60.0], normalize=False)
    assert srf.shape == (2, lam.numel()) and srf.dtype == torch.float64
    assert lam[srf[0].argmax()] == 450 and lam[srf[1].argmax()] == 550
    half = {(0, 430.0), (0, 470.0), (1, 520.0), (1, 580.0)}  # centre +- fwhm / 2
    for row, wl in half:
        assert math.isclose(float(srf[row, int(wl - 400)]), 0.5, rel_tol=1e-12)
    normed = gaussian_srf(lam, [450.0, 550.0], 50.0)
    torch.testing.assert_close(normed.sum(1), torch.ones(2, dtype=torch.float64))


def test_camera_rgb_srf_orders_red_green_blue() -> None:
    lam = torch.linspace(400, 700, 31)
    srf = camera_rgb_srf(lam)
    peaks = lam[srf.argmax(dim=1)]
    assert srf.shape == (3, 31) and peaks[0] > peaks[1] > peaks[2]
    assert bool((srf >= 0).all())


# Tabulated CIE 1931 2-degree colour matching functions (x̄, ȳ, z̄) at selected wavelengths.
CIE_1931 = {
    445: (0.3481, 0.0298, 1.7826),
    450: (0.3362, 0.0380, 1.7721),
    500: (0.0049, 0.3230, 0.2720),
    550: (0.4334, 0.9950, 0.0087),
    555: (0.5121, 1.0000, 0.0057),
    600: (1.0622, 0.6310, 0.0008),
    650: (0.2835, 0.1070, 0.0000),
}


def test_cie_xyz_srf_close_to_tabulated_cie_1931() -> None:
    lam = torch.tensor(sorted(CIE_1931), dtype=torch.float64)
    srf = cie_xyz_srf(lam, normalize=False)
    ref = torch.tensor([CIE_1931[int(w)] for w in lam.tolist()], dtype=torch.float64).T
    assert float((srf - ref).abs().max()) < 0.015  # the analytic fit's stated accuracy
    normed = cie_xyz_srf(torch.linspace(380, 780, 81))
    assert math.isclose(float(normed[1].sum()), 1.0, rel_tol=1e-12)


# ---- super-resolution --------------------------------------------------------------------------------
@pytest.mark.parametrize("boundary,mode", [("reflect", "reflect"), ("periodic", "wrap")])
@pytest.mark.parametrize("factor,sigma", [(3, 1.0), (1, 0.7), (5, 2.0)])
def test_sr_odd_factor_matches_scipy_gaussian_filter(factor: int, sigma: float, boundary: str, mode: str) -> None:
    shape = (3, 15, 30)
    op = HyperspectralSuperResolution(shape, factor, sigma, boundary=boundary)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen(4))
    blurred = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode=mode, truncate=4.0)
    start = (factor - 1) // 2
    np.testing.assert_allclose(op(x).numpy(), blurred[..., start::factor, start::factor], rtol=1e-12, atol=1e-12)


def np_gaussian_decimate(x: np.ndarray, f: int, sigma: float, axis: int, truncate: float = 4.0) -> np.ndarray:
    """Blur with a Gaussian centred between pixels (even f) and sample; symmetric padding; plain loops."""
    x = np.moveaxis(x, axis, -1)
    n, r = x.shape[-1], int(truncate * sigma + 0.5)
    pad = r + f + 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="symmetric")
    out = np.empty(x.shape[:-1] + (n // f,))
    for i in range(n // f):
        c = i * f + (f - 1) / 2
        support = r + 0.5 * (f % 2 == 0)
        js = [j for j in range(-pad, n + pad) if abs(j - c) <= support]
        w = np.array([math.exp(-0.5 * ((j - c) / sigma) ** 2) for j in js])
        out[..., i] = xp[..., np.array(js) + pad] @ (w / w.sum())
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("factor,sigma", [(2, 1.0), (4, 1.7)])
def test_sr_even_factor_matches_numpy_reference(factor: int, sigma: float) -> None:
    shape = (2, 16, 8)
    op = HyperspectralSuperResolution(shape, factor, sigma)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen(5))
    ref = np_gaussian_decimate(np_gaussian_decimate(x.numpy(), factor, sigma, 2), factor, sigma, 3)
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_sr_svd_pinv_and_default_sigma() -> None:
    op = HyperspectralSuperResolution((2, 8, 6), 2, 0.8)
    a = dense(op)
    ours = op.singular_values().flatten().sort(descending=True).values
    ref = torch.linalg.svdvals(a)
    torch.testing.assert_close(ours[: ref.numel()], ref, rtol=1e-10, atol=1e-12)
    assert float(ours[ref.numel():].abs().max()) == 0.0
    y = torch.randn(2, *op.y_shape, dtype=torch.float64, generator=gen(6))
    ref_pinv = (torch.linalg.pinv(a) @ y.reshape(2, -1).T).T.reshape(2, *op.x_shape)
    torch.testing.assert_close(op.pinv(y), ref_pinv, rtol=1e-8, atol=1e-8)
    default = HyperspectralSuperResolution((1, 12, 12), 4)
    assert math.isclose(default.blur_sigma[0], 4 / (2 * math.sqrt(2 * math.log(2))))  # FWHM = factor
    torch.testing.assert_close(gaussian_decimation_matrix(12, 3, 1.0).sum(1), torch.ones(4, dtype=torch.float64))


# ---- completion and denoising --------------------------------------------------------------------------
def test_band_completion_zeroes_missing_bands() -> None:
    op = BandCompletion((6, 4, 5), [0, 3])
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64, generator=gen(7))
    expected = x.numpy().copy()
    expected[:, [0, 3]] = 0.0
    np.testing.assert_array_equal(op(x).numpy(), expected)
    s = op.singular_values()
    assert s.shape == (6, 4, 5) and float(s[[0, 3]].abs().max()) == 0.0 and bool((s[[1, 2, 4, 5]] == 1).all())
    torch.testing.assert_close(op.pinv(op(x)), torch.from_numpy(expected))


def test_pixel_completion_pixels_and_voxels() -> None:
    pixels = random_pixel_mask((4, 5), 0.5, generator=gen(8))
    op = PixelCompletion((3, 4, 5), pixels)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen(9))
    np.testing.assert_array_equal(op(x).numpy(), np.where(pixels.numpy()[None, None], x.numpy(), 0.0))
    voxels = random_pixel_mask((3, 4, 5), 0.5, generator=gen(10))
    op_v = PixelCompletion((3, 4, 5), voxels.to(torch.uint8))
    np.testing.assert_array_equal(op_v(x).numpy(), np.where(voxels.numpy()[None], x.numpy(), 0.0))
    torch.testing.assert_close(op_v.singular_values(), voxels.float())


def test_denoising_is_identity_copy() -> None:
    op = HyperspectralDenoising((4, 3, 5))
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=gen(11))
    y = op(x)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    assert y.data_ptr() != x.data_ptr()
    torch.testing.assert_close(op.pinv(y), x, rtol=0, atol=0)
    assert bool((op.singular_values() == 1).all()) and op.singular_values().shape == (4, 3, 5)


# ---- error paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "srf,exc,match",
    [
        (torch.tensor([[1.0, float("nan")]]), ValueError, "srf contains NaN or Inf"),
        (torch.tensor([[1.0, float("inf")]]), ValueError, "srf contains NaN or Inf"),
        (torch.ones(4), ValueError, r"srf must be a 2-D \(channels, bands\) matrix, got shape \(4,\)"),
        (torch.ones(2, 3, dtype=torch.complex64), TypeError, "srf must be a real floating-point tensor"),
        (np.ones((2, 3)), TypeError, "srf must be a torch.Tensor"),
    ],
)
def test_spectral_response_bad_srf(srf: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        SpectralResponse(srf, (4, 4))  # type: ignore[arg-type]


def test_spectral_response_bad_spatial_shape_and_band_count() -> None:
    with pytest.raises(ValueError, match=r"shape must be \(H, W\) with positive ints"):
        SpectralResponse(torch.ones(3, 5), (4, 4, 4))
    op = SpectralResponse(torch.ones(3, 5), (4, 4))
    with pytest.raises(ValueError, match=r"x has shape \(1, 6, 4, 4\); SpectralResponse expects \(B, 5, 4, 4\)"):
        op(torch.zeros(1, 6, 4, 4))


def test_srf_helper_errors() -> None:
    lam = torch.linspace(400, 700, 11)
    with pytest.raises(ValueError, match=r"fwhm must be > 0, one value or one per centre \(2\), got 0"):
        gaussian_srf(lam, [450, 550], 0)
    with pytest.raises(ValueError, match=r"fwhm must be > 0, one value or one per centre \(2\)"):
        gaussian_srf(lam, [450, 550], [30, 40, 50])
    with pytest.raises(ValueError, match="wavelengths must be a non-empty sequence of finite numbers"):
        gaussian_srf(torch.tensor([400.0, float("nan")]), [450], 30)
    with pytest.raises(ValueError, match="centres must be a non-empty sequence of finite numbers"):
        gaussian_srf(lam, [], 30)
    with pytest.raises(ValueError, match="wavelengths must be a non-empty sequence of finite numbers"):
        cie_xyz_srf([float("inf")])


def test_super_resolution_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 37, 31\) is not divisible by factor 2: spatial size 37"):
        HyperspectralSuperResolution((4, 37, 31), 2, 1.0)
    for factor in (0, -1, 1.5):
        with pytest.raises(ValueError, match=r"factor must be an integer >= 1"):
            HyperspectralSuperResolution((4, 8, 8), factor, 1.0)  # type: ignore[arg-type]
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="blur_sigma must be a finite number > 0, got"):
            HyperspectralSuperResolution((4, 8, 8), 2, sigma)
    with pytest.raises(ValueError, match=r"shape must be \(bands, H, W\) with positive ints"):
        HyperspectralSuperResolution((1, 4, 8, 8), 2, 1.0)
    with pytest.raises(ValueError, match=r"boundary must be one of"):
        HyperspectralSuperResolution((4, 8, 8), 2, 1.0, boundary="zeros")  # type: ignore[arg-type]


def test_completion_and_denoising_errors() -> None:
    with pytest.raises(ValueError, match=r"missing_bands must be a sequence of band indices in \[0, 5\), got \[5\]"):
        BandCompletion((5, 4, 4), [5])
    with pytest.raises(ValueError, match=r"missing_bands must be a sequence of band indices in \[0, 5\), got \[-1\]"):
        BandCompletion((5, 4, 4), [-1])
    with pytest.raises(ValueError, match=r"missing_bands must not repeat an index, got \[1, 1\]"):
        BandCompletion((5, 4, 4), [1, 1])
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\) = \(4, 4\) or \(bands, H, W\) = \(5, 4, 4\)"):
        PixelCompletion((5, 4, 4), torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask contains NaN or Inf"):
        PixelCompletion((5, 4, 4), torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"shape must be \(bands, H, W\) with positive ints"):
        HyperspectralDenoising((4, 4))
