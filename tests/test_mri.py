"""MRI family: centred FFTs against NumPy (the fastMRI convention) and sigpy, the operators against
direct NumPy formulas, layout helpers, and every error path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invdiff.operators import DecomposableOperator, GaussianNoise, LinearOperator
from invdiff.operators.coil_maps import birdcage_maps
from invdiff.operators.fft import fft2c, fftnc, ifft2c, ifftnc
from invdiff.operators.kspace_masks import poisson_disc_mask, random_column_mask
from invdiff.operators.mri import (
    MulticoilMRI,
    SinglecoilMRI,
    channels_to_complex,
    complex_to_channels,
    rss,
    zero_filled,
)


def crandn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def np_fftc(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def np_ifftc(k: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)


# ---- FFTs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 1, 37, 31), (5, 4), (2, 1, 7, 10)])
def test_fft2c_matches_numpy_fastmri_convention(shape: tuple[int, ...]) -> None:
    x = crandn(*shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, rtol=1e-12, atol=1e-12)
    ref_inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ifft2c(x).numpy(), ref_inv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 1, 4, 6, 5), (3, 7, 8)])
def test_fftnc_3d_matches_numpy_and_sigpy(shape: tuple[int, ...]) -> None:
    x = crandn(*shape, seed=1)
    axes = (-3, -2, -1)
    np.testing.assert_allclose(fftnc(x, 3).numpy(), np_fftc(x.numpy(), axes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ifftnc(x, 3).numpy(), np_ifftc(x.numpy(), axes), rtol=1e-12, atol=1e-12)
    sp = pytest.importorskip("sigpy")
    np.testing.assert_allclose(fftnc(x, 3).numpy(), sp.fft(x.numpy(), axes=axes), rtol=1e-10, atol=1e-12)


def test_fft_is_unitary_inverse_and_keeps_dtype() -> None:
    x = crandn(2, 1, 9, 12, dtype=torch.complex64)
    k = fft2c(x)
    assert k.dtype == torch.complex64
    torch.testing.assert_close(ifft2c(k), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k.norm(), x.norm(), rtol=1e-5, atol=0)
    # DC at index n // 2 for odd sizes too.
    ones = torch.ones(1, 5, 7, dtype=torch.complex128)
    k1 = fft2c(ones)
    assert float(k1[0, 2, 3].real) == pytest.approx(np.sqrt(35))
    assert float(k1.abs().sum() - k1[0, 2, 3].abs()) == pytest.approx(0, abs=1e-12)


def test_fft_errors() -> None:
    with pytest.raises(
        TypeError, match=r"fftnc: input must be a complex tensor, got torch.float32; .*channels_to_complex"
    ):
        fft2c(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError, match=r"ifftnc: input must be a complex tensor, got torch.float64"):
        ifftnc(torch.zeros(4, 4, dtype=torch.float64), 2)
    with pytest.raises(TypeError, match=r"fftnc: input must be a torch.Tensor, got ndarray"):
        fftnc(np.zeros((4, 4), dtype=complex), 2)  # type: ignore[arg-type]
    for dims in (0, 3, 2.0, True):
        with pytest.raises(ValueError, match=r"fftnc: spatial_dims must be an integer in \[1, 2\] .* got"):
            fftnc(torch.zeros(4, 4, dtype=torch.complex64), dims)  # type: ignore[arg-type]


# ---- single coil --------------------------------------------------------------------------------------
def test_singlecoil_against_numpy_and_zero_filled() -> None:
    mask = random_column_mask((12, 10), 3, 0.2, generator=torch.Generator().manual_seed(0))
    op = SinglecoilMRI(mask).double()
    assert isinstance(op, DecomposableOperator)
    assert op.x_shape == (1, 12, 10) and op.y_shape == (1, 12, 10) and op.x_is_complex and op.y_is_complex
    x = crandn(3, 1, 12, 10)
    y = op(x)
    ref = np_fftc(x.numpy(), (-2, -1)) * mask.numpy()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert bool((y[:, :, ~mask] == 0).all()), "exact zeros where the mask is 0"
    # pinv is the zero-filled reconstruction, the adjoint, with no iteration.
    np.testing.assert_allclose(op.pinv(y).numpy(), np_ifftc(ref, (-2, -1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.pinv(y), zero_filled(y), rtol=0, atol=0)
    assert op.acceleration == pytest.approx(12 * 10 / float(mask.sum()))


def test_singlecoil_two_channel_layout_equals_complex() -> None:
    mask = poisson_disc_mask((16, 16), 3, 4, generator=torch.Generator().manual_seed(1))
    op_c, op_r = SinglecoilMRI(mask).double(), SinglecoilMRI(mask, complex_channels=True).double()
    assert op_r.x_shape == (2, 16, 16) and not op_r.x_is_complex and isinstance(op_r, DecomposableOperator)
    z = crandn(2, 1, 16, 16, seed=2)
    y = op_c(z)
    torch.testing.assert_close(op_r(complex_to_channels(z)), y, rtol=0, atol=0)
    torch.testing.assert_close(op_r.adjoint(y), complex_to_channels(op_c.adjoint(y)), rtol=0, atol=0)
    torch.testing.assert_close(op_r.pinv(y), complex_to_channels(op_c.pinv(y)), rtol=0, atol=0)
    # The SVD view: A = U diag(s) V^H with s the mask on both channels.
    assert op_r.singular_values().shape == (2, 16, 16)
    torch.testing.assert_close(op_r.singular_values()[1], mask.double(), rtol=0, atol=0)


def test_singlecoil_3d_and_column_mask_broadcast() -> None:
    mask = random_column_mask(8, 2, 0.25, generator=torch.Generator().manual_seed(3))
    op = SinglecoilMRI(mask, image_shape=(4, 6, 8)).double()
    assert op.x_shape == (1, 4, 6, 8) and op.mask.shape == (4, 6, 8)
    x = crandn(2, 1, 4, 6, 8)
    ref = np_fftc(x.numpy(), (-3, -2, -1)) * mask.numpy()
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_singlecoil_state_dtype_and_noise() -> None:
    op = SinglecoilMRI(torch.ones(4, 4, dtype=torch.bool))
    assert op.mask.dtype == torch.float32 and set(op.state_dict()) == {"mask"}
    assert op.to(torch.float64).mask.dtype == torch.float64
    x = crandn(1, 1, 4, 4, dtype=torch.complex64)
    y = GaussianNoise(0.1).sample(op(x), generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.complex64 and op.pinv(y).dtype == torch.complex64


# ---- multi coil ---------------------------------------------------------------------------------------
def test_multicoil_against_numpy() -> None:
    mask = random_column_mask((10, 12), 2, 0.2, generator=torch.Generator().manual_seed(0))
    maps = birdcage_maps((10, 12), 4, dtype=torch.complex128)
    op = MulticoilMRI(mask, maps).double()
    assert isinstance(op, LinearOperator) and not isinstance(op, DecomposableOperator)
    assert op.x_shape == (1, 10, 12) and op.y_shape == (4, 10, 12) and op.coils == 4
    x = crandn(2, 1, 10, 12)
    y = op(x)
    ref = np_fftc(maps.numpy()[None] * x.numpy(), (-2, -1)) * mask.numpy()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert bool((y[:, :, ~mask] == 0).all())
    v = crandn(2, 4, 10, 12, seed=1)
    ref_adj = (np.conj(maps.numpy())[None] * np_ifftc(v.numpy() * mask.numpy(), (-2, -1))).sum(1, keepdims=True)
    np.testing.assert_allclose(op.adjoint(v).numpy(), ref_adj, rtol=1e-12, atol=1e-12)


def test_multicoil_with_one_coil_of_ones_is_singlecoil() -> None:
    mask = poisson_disc_mask((12, 14), 2, 4, generator=torch.Generator().manual_seed(0))
    for channels in (False, True):
        single = SinglecoilMRI(mask, complex_channels=channels).double()
        multi = MulticoilMRI(mask, torch.ones(1, 12, 14), complex_channels=channels).double()
        x = crandn(2, 1, 12, 14)
        x = complex_to_channels(x) if channels else x
        y = single(x)
        torch.testing.assert_close(multi(x), y, rtol=0, atol=0)
        torch.testing.assert_close(multi.adjoint(y), single.adjoint(y), rtol=0, atol=0)
        torch.testing.assert_close(multi.pinv(y, tol=1e-12), single.pinv(y), rtol=1e-10, atol=1e-10)


def test_multicoil_full_sampling_normalised_maps_is_isometry_3d() -> None:
    maps = birdcage_maps((4, 6, 8), 6, rings=2, dtype=torch.complex128)
    op = MulticoilMRI(torch.ones(4, 6, 8), maps).double()
    x = crandn(2, 1, 4, 6, 8)
    torch.testing.assert_close(op.normal(x), x, rtol=1e-12, atol=1e-12)
    # The RSS of the zero-filled coil images of fully sampled data is |x|.
    torch.testing.assert_close(rss(zero_filled(op(x))), x.abs(), rtol=1e-12, atol=1e-12)


def test_multicoil_buffers_follow_dtype_and_state_dict() -> None:
    maps = birdcage_maps((6, 6), 3)
    op = MulticoilMRI(torch.ones(6, 6), maps)
    assert set(op.state_dict()) == {"mask", "coil_maps_ri"}
    torch.testing.assert_close(op.coil_maps, maps, rtol=0, atol=0)
    op64 = MulticoilMRI(torch.ones(6, 6), maps).to(torch.float64)
    assert op64.coil_maps.dtype == torch.complex128
    x = crandn(1, 1, 6, 6, dtype=torch.complex64)
    assert op64(x).dtype == torch.complex64, "operators follow the dtype of their input"


# ---- helpers ------------------------------------------------------------------------------------------
def test_layout_helpers_and_rss() -> None:
    z = crandn(2, 3, 4, 5)
    x = complex_to_channels(z)
    assert x.shape == (2, 6, 4, 5) and x.dtype == torch.float64
    torch.testing.assert_close(x[:, :3], z.real, rtol=0, atol=0)
    torch.testing.assert_close(x[:, 3:], z.imag, rtol=0, atol=0)
    torch.testing.assert_close(channels_to_complex(x), z, rtol=0, atol=0)
    r = rss(z)
    assert r.shape == (2, 1, 4, 5)
    np.testing.assert_allclose(r.numpy()[:, 0], np.sqrt((np.abs(z.numpy()) ** 2).sum(1)), rtol=1e-12)
    assert rss(z, keepdim=False).shape == (2, 4, 5)
    np.testing.assert_allclose(zero_filled(z).numpy(), np_ifftc(z.numpy(), (-2, -1)), rtol=1e-12, atol=1e-12)
    v = crandn(1, 2, 3, 4, 5)
    np.testing.assert_allclose(zero_filled(v).numpy(), np_ifftc(v.numpy(), (-3, -2, -1)), rtol=1e-12, atol=1e-12)


def test_helper_errors() -> None:
    with pytest.raises(
        TypeError, match=r"complex_to_channels: z must be a complex tensor \(B, C, ...\), got torch.float32"
    ):
        complex_to_channels(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"complex_to_channels: z must have a batch and a channel axis"):
        complex_to_channels(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(
        TypeError, match=r"channels_to_complex: x must be a real floating tensor .* got torch.complex64"
    ):
        channels_to_complex(torch.zeros(1, 2, 2, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"channels_to_complex: x must be a real floating tensor .* got torch.int64"):
        channels_to_complex(torch.zeros(1, 2, 2, 2, dtype=torch.int64))
    with pytest.raises(
        ValueError, match=r"channels_to_complex: x must have an even number of channels .* \(1, 3, 2, 2\)"
    ):
        channels_to_complex(torch.zeros(1, 3, 2, 2))
    with pytest.raises(
        TypeError, match=r"zero_filled: y must be complex k-space .* got torch.float32; .*channels_to_complex"
    ):
        zero_filled(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"zero_filled: y must have shape \(B, coils, H, W\) or .* got \(4, 4\)"):
        zero_filled(torch.zeros(4, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"rss: images must be a torch.Tensor, got list"):
        rss([1.0])  # type: ignore[arg-type]


# ---- operator error paths -----------------------------------------------------------------------------
def test_mask_errors() -> None:
    with pytest.raises(TypeError, match=r"SinglecoilMRI: mask must be a torch.Tensor, got ndarray"):
        SinglecoilMRI(np.ones((4, 4)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"SinglecoilMRI: mask must be a real or bool tensor, got torch.complex64"):
        SinglecoilMRI(torch.ones(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"mask must contain only 0 and 1 \(False/True\), got values in \[0.0, 0.5\]"):
        SinglecoilMRI(torch.full((4, 4), 0.5).index_fill_(0, torch.tensor([0]), 0.0))
    bad = torch.ones(4, 4)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="SinglecoilMRI: mask contains NaN or Inf"):
        SinglecoilMRI(bad)
    with pytest.raises(
        ValueError, match=r"mask has shape \(4, 5\), which does not broadcast to the image grid \(4, 6\)"
    ):
        SinglecoilMRI(torch.ones(4, 5), image_shape=(4, 6))
    with pytest.raises(
        ValueError, match=r"mask has shape \(2, 4, 6\), which does not broadcast to the image grid \(4, 6\)"
    ):
        SinglecoilMRI(torch.ones(2, 4, 6), image_shape=(4, 6))
    with pytest.raises(
        ValueError, match=r"SinglecoilMRI: image_shape must be \(H, W\) or \(D, H, W\) positive integers, got \(8,\)"
    ):
        SinglecoilMRI(torch.ones(8))
    with pytest.raises(ValueError, match=r"image_shape must be .* got \(0, 4\)"):
        SinglecoilMRI(torch.ones(4), image_shape=(0, 4))
    with pytest.raises(TypeError, match=r"complex_channels must be a bool, got 1"):
        SinglecoilMRI(torch.ones(4, 4), complex_channels=1)  # type: ignore[arg-type]


def test_coil_map_errors() -> None:
    mask = torch.ones(6, 8)
    with pytest.raises(TypeError, match=r"MulticoilMRI: coil_maps must be a torch.Tensor, got list"):
        MulticoilMRI(mask, [1.0])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"coil_maps must have shape \(coils, H, W\) or \(coils, D, H, W\) .* got \(6, 8\)"
    ):
        MulticoilMRI(mask, torch.ones(6, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"coil_maps must have shape .* got \(1, 2, 2, 6, 8\)"):
        MulticoilMRI(mask, torch.ones(1, 2, 2, 6, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"coil_maps must have shape .* got \(0, 6, 8\)"):
        MulticoilMRI(mask, torch.ones(0, 6, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"coil_maps must be a complex \(or real floating\) tensor, got torch.int64"):
        MulticoilMRI(mask, torch.ones(2, 6, 8, dtype=torch.int64))
    maps = torch.ones(2, 6, 8, dtype=torch.complex64)
    maps[1, 0, 0] = complex(float("inf"), 0)
    with pytest.raises(ValueError, match="MulticoilMRI: coil_maps contains NaN or Inf"):
        MulticoilMRI(mask, maps)
    with pytest.raises(
        ValueError, match=r"mask has shape \(6, 7\), which does not broadcast to the image grid \(6, 8\)"
    ):
        MulticoilMRI(torch.ones(6, 7), torch.ones(2, 6, 8, dtype=torch.complex64))
    with pytest.raises(
        ValueError, match=r"mask has shape \(3, 6, 8\) but the coil maps \(2, 6, 8\) give the image grid \(6, 8\)"
    ):
        MulticoilMRI(torch.ones(3, 6, 8), torch.ones(2, 6, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"MulticoilMRI: mask must be a torch.Tensor, got NoneType"):
        MulticoilMRI(None, torch.ones(2, 6, 8, dtype=torch.complex64))  # type: ignore[arg-type]


def test_call_time_layout_errors_have_hints() -> None:
    op = SinglecoilMRI(torch.ones(4, 4))
    op_r = SinglecoilMRI(torch.ones(4, 4), complex_channels=True)
    multi = MulticoilMRI(torch.ones(4, 4), birdcage_maps((4, 4), 2))
    with pytest.raises(
        TypeError, match=r"x has dtype torch.float32; SinglecoilMRI expects a complex image; .*complex_channels=True"
    ):
        op(torch.zeros(1, 2, 4, 4))
    with pytest.raises(
        TypeError, match=r"x has dtype torch.complex64; SinglecoilMRI expects a real image; .*complex_to_channels"
    ):
        op_r(torch.zeros(1, 1, 4, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"x has dtype torch.float32; MulticoilMRI expects a complex image"):
        multi(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"x has shape \(1, 1, 4, 5\); SinglecoilMRI expects \(B, 1, 4, 4\)"):
        op(torch.zeros(1, 1, 4, 5, dtype=torch.complex64))
    for target in (op, op_r, multi):
        coils = target.y_shape[0]
        with pytest.raises(
            TypeError, match=r"y has dtype torch.float32; .* expects complex k-space .*channels_to_complex"
        ):
            target.adjoint(torch.zeros(1, coils, 4, 4))
        with pytest.raises(TypeError, match=r"y has dtype torch.float32; .* expects complex k-space"):
            target.pinv(torch.zeros(1, coils, 4, 4))
        with pytest.raises(
            ValueError, match=r"y has shape \(1, 2, 4, 4, 2\); .* \(real/imaginary pairs in a last axis\?"
        ):
            target.adjoint(torch.zeros(1, 2, 4, 4, 2, dtype=torch.complex64))
