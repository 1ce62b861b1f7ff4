"""Blur family: forward/adjoint against SciPy, SVD and pinv against dense NumPy linear algebra,
kernel generators, and every error path. The generic operator contract runs in
``test_operator_contract.py`` over ``operator_cases/blur.py``."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from invdiff.operators import blur as blur_module
from invdiff.operators.blur import Blur, box_kernel, gaussian_kernel, motion_kernel


def _rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _per_image(fn, x: torch.Tensor, k: torch.Tensor) -> np.ndarray:
    """Apply a SciPy filter to every (batch, channel) image of x."""
    xn, kn = x.numpy(), k.double().numpy()
    return np.stack([np.stack([fn(img, kn, mode="wrap") for img in item]) for item in xn])


def _dense(op: Blur) -> np.ndarray:
    """The operator as an (n, n) matrix, one image channel (C = 1)."""
    n = math.prod(op.x_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *op.x_shape)
    return op(basis).reshape(n, n).T.numpy()


# ---- forward and adjoint against SciPy ---------------------------------------------------------
@pytest.mark.parametrize("kshape", [(5, 5), (4, 6), (2, 3), (1, 1), (13, 17)], ids=str)
def test_forward_and_adjoint_match_scipy_2d(kshape: tuple[int, int]) -> None:
    k = _rand(kshape, 0)
    op = Blur(k, (3, 13, 17))
    x = _rand((2, 3, 13, 17), 1)
    np.testing.assert_allclose(op(x).numpy(), _per_image(ndimage.convolve, x, k), rtol=0, atol=1e-10)
    # The adjoint is correlation with the kernel (convolution with the flipped kernel).
    np.testing.assert_allclose(op.adjoint(x).numpy(), _per_image(ndimage.correlate, x, k), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kshape", [(3, 3, 3), (3, 4, 5), (2, 2, 1)], ids=str)
def test_forward_and_adjoint_match_scipy_3d(kshape: tuple[int, int, int]) -> None:
    k = _rand(kshape, 2)
    op = Blur(k, (2, 7, 8, 9))
    x = _rand((2, 2, 7, 8, 9), 3)
    np.testing.assert_allclose(op(x).numpy(), _per_image(ndimage.convolve, x, k), rtol=0, atol=1e-10)
    np.testing.assert_allclose(op.adjoint(x).numpy(), _per_image(ndimage.correlate, x, k), rtol=0, atol=1e-10)


def test_impulse_response_is_the_kernel_centred_at_k_over_2() -> None:
    k = _rand((4, 5), 4)  # even axis: centre at index 2, i.e. two samples before it and one after
    op = Blur(k, (1, 10, 11))
    x = torch.zeros(1, 1, 10, 11, dtype=torch.float64)
    x[0, 0, 5, 5] = 1.0
    y = op(x)[0, 0]
    torch.testing.assert_close(y[5 - 2 : 5 + 2, 5 - 2 : 5 + 3], k, rtol=0, atol=1e-12)
    assert float(y.abs().sum() - k.abs().sum()) == pytest.approx(0.0, abs=1e-12)


def test_float32_operator_follows_float64_input_exactly() -> None:
    """The transfer function is computed in the input's dtype: float32 buffers, float64 result."""
    k = gaussian_kernel((1.3, 0.7))
    op = Blur(k, (1, 20, 18))
    x = _rand((2, 1, 20, 18), 5)
    y = op(x)
    assert y.dtype == torch.float64 and op.kernel.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), _per_image(ndimage.convolve, x, k), rtol=0, atol=1e-12)


def test_integer_kernel_is_converted_to_float32() -> None:
    op = Blur(torch.ones(3, 3, dtype=torch.int64), (1, 6, 6))
    assert op.kernel.dtype == torch.float32
    torch.testing.assert_close(op(torch.ones(1, 1, 6, 6)), torch.full((1, 1, 6, 6), 9.0))


def test_blur_is_differentiable_and_uses_no_global_rng(global_rng_guard: None) -> None:
    op = Blur(box_kernel(3), (1, 8, 8))
    x = _rand((1, 1, 8, 8), 6).requires_grad_(True)
    op(x).square().sum().backward()
    torch.testing.assert_close(x.grad, 2 * op.normal(x.detach()), rtol=1e-12, atol=1e-12)


# ---- SVD and pseudo-inverse against dense linear algebra ----------------------------------------
def test_singular_values_match_dense_svd() -> None:
    op = Blur(_rand((3, 4), 7), (1, 9, 10))
    s = op.singular_values()
    assert s.shape == (1, 9, 10)
    dense_s = np.linalg.svd(_dense(op), compute_uv=False)
    np.testing.assert_allclose(np.sort(s.flatten().numpy())[::-1], dense_s, rtol=1e-10, atol=1e-12)


def test_pinv_matches_numpy_pinv_with_same_cutoff() -> None:
    """Box of width 4 on 12 columns: exact spectral zeros, so the operator is singular."""
    op = Blur(box_kernel((3, 4)).double(), (1, 9, 12))
    dense = _dense(op)
    assert np.linalg.matrix_rank(dense) < dense.shape[0]
    y = _rand((2, 1, 9, 12), 8)
    expected = np.stack([np.linalg.pinv(dense, rcond=1e-6) @ item.flatten() for item in y.numpy()])
    np.testing.assert_allclose(op.pinv(y).reshape(2, -1).numpy(), expected, rtol=0, atol=1e-10)


def test_pinv_inverts_an_invertible_blur() -> None:
    op = Blur(gaussian_kernel(0.6).double(), (2, 16, 15))
    x = _rand((2, 2, 16, 15), 9)
    torch.testing.assert_close(op.pinv(op(x)), x, rtol=1e-9, atol=1e-9)


def test_u_adjoint_is_zero_where_singular_values_vanish() -> None:
    op = Blur(torch.tensor([[0.5, 0.5]], dtype=torch.float64), (1, 4, 8))  # exact zero at the Nyquist column
    s = op.singular_values()
    assert bool((s == 0).any())
    z = op.u_adjoint(_rand((3, 1, 4, 8), 10))
    assert bool((z[:, s == 0] == 0).all())
    assert bool((z[:, s > 0] != 0).all())


# ---- kernels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [1.0, (1.5, 0.8), (0.7, 1.5, 1.0)], ids=str)
def test_gaussian_kernel_matches_scipy_gaussian_filter(sigma: float | tuple[float, ...]) -> None:
    ndim = 2 if isinstance(sigma, float) else len(sigma)
    k = gaussian_kernel(sigma, ndim=ndim)
    sigmas = (sigma,) * ndim if isinstance(sigma, float) else sigma
    radius = [math.ceil(3 * s) for s in sigmas]
    assert k.shape == tuple(2 * r + 1 for r in radius) and k.dtype == torch.float32
    delta = np.zeros(k.shape)
    delta[tuple(r for r in radius)] = 1.0
    expected = ndimage.gaussian_filter(delta, sigmas, mode="constant", radius=radius)
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-6, atol=1e-8)
    assert k.double().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_kernel_explicit_size_and_even_centre() -> None:
    k = gaussian_kernel(2.0, size=(4, 7))
    assert k.shape == (4, 7)
    assert k.double().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert tuple(int(i) for i in np.unravel_index(int(k.argmax()), k.shape)) == (2, 3)  # centre at size // 2
    torch.testing.assert_close(k[1:], k[1:].flip(0))  # symmetric about the centre where both sides exist


def test_box_kernel() -> None:
    k = box_kernel((2, 3, 4), ndim=3)
    assert k.shape == (2, 3, 4) and k.dtype == torch.float32
    assert bool((k == k.flatten()[0]).all())
    assert k.double().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_motion_kernel_is_reproducible_normalised_and_centred(global_rng_guard: None) -> None:
    a = motion_kernel(31, torch.Generator().manual_seed(3))
    b = motion_kernel(31, torch.Generator().manual_seed(3))
    c = motion_kernel(31, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (31, 31) and a.dtype == torch.float32
    assert bool((a >= 0).all())
    assert a.double().sum().item() == pytest.approx(1.0, abs=1e-6)
    # Centre of mass on the kernel centre: the blur does not shift the image on average.
    grid = torch.stack(torch.meshgrid(torch.arange(31.0), torch.arange(31.0), indexing="ij")).double()
    centroid = (grid * a.double()).flatten(1).sum(1)
    torch.testing.assert_close(centroid, torch.full((2,), 15.0, dtype=torch.float64), rtol=0, atol=1e-4)
    # A trajectory, not a blob: most pixels stay empty; scaled to fit, it reaches the kernel's edge.
    assert float((a > 0).double().mean()) < 0.3
    support = torch.nonzero(a > 0)
    assert int(support.min()) == 0 or int(support.max()) == 30


def test_motion_kernel_intensity_zero_is_a_straight_line() -> None:
    k = motion_kernel(41, torch.Generator().manual_seed(0), intensity=0.0).double()
    grid = torch.stack(torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")).double().flatten(1)
    w = k.flatten()
    mean = (grid * w).sum(1, keepdim=True)
    cov = ((grid - mean) * w) @ (grid - mean).T
    eig = torch.linalg.eigvalsh(cov)
    assert float(eig[0] / eig[1]) < 5e-3  # bilinear splatting gives the line ~1 px of width
    wobbly = motion_kernel(41, torch.Generator().manual_seed(0), intensity=1.0).double()
    assert float((wobbly > 0).sum()) > float((k > 0).sum())


def test_motion_kernel_3d_and_tiny_sizes() -> None:
    k = motion_kernel(9, torch.Generator().manual_seed(1), ndim=3)
    assert k.shape == (9, 9, 9) and k.double().sum().item() == pytest.approx(1.0, abs=1e-6)
    delta = motion_kernel(1, torch.Generator().manual_seed(1))
    assert delta.shape == (1, 1) and float(delta) == 1.0


def test_docstring_examples() -> None:
    result = doctest.testmod(blur_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---- error paths --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel,shape,error,match",
    [
        ([[1.0]], (1, 4, 4), TypeError, "kernel must be a torch.Tensor, got list"),
        (torch.ones(3, 3, dtype=torch.complex64), (1, 4, 4), TypeError, "kernel must be a real tensor"),
        (torch.ones(3), (1, 4), ValueError, r"kernel must be 2D .* or 3D .*, got shape \(3,\)"),
        (torch.ones(1, 1, 3, 3), (1, 1, 4, 4), ValueError, r"got shape \(1, 1, 3, 3\)"),
        (torch.tensor([[1.0, float("nan")]]), (1, 4, 4), ValueError, "kernel must be finite, got NaN or Inf"),
        (torch.tensor([[1.0, float("inf")]]), (1, 4, 4), ValueError, "kernel must be finite, got NaN or Inf"),
        (torch.zeros(3, 3), (1, 4, 4), ValueError, "kernel must have a non-zero entry, got all zeros"),
        (
            torch.ones(3, 3),
            (4, 4),
            ValueError,
            r"shape \(4, 4\) does not match the 2D kernel .* expected x_shape \(C, H, W\)",
        ),
        (torch.ones(3, 3), (1, 4, 4, 4), ValueError, r"does not match the 2D kernel"),
        (torch.ones(3, 3, 3), (1, 4, 4), ValueError, r"expected x_shape \(C, D, H, W\)"),
        (torch.ones(5, 3), (1, 4, 8), ValueError, r"kernel of shape \(5, 3\) is larger than the image \(4, 8\)"),
        (torch.ones(3, 3, 3), (1, 4, 2, 4), ValueError, r"larger than the image \(4, 2, 4\)"),
        (torch.ones(3, 3), (1, 0, 4), ValueError, r"shape must be a sequence of integers >= 1, got \(1, 0, 4\)"),
        (torch.ones(3, 3), (1, 4.5, 4), ValueError, r"shape must be a sequence of integers"),
        (torch.ones(3, 3), 5, ValueError, r"shape must be a sequence of integers"),
    ],
)
def test_blur_rejects_bad_construction(kernel: object, shape: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Blur(kernel, shape)  # type: ignore[arg-type]


def test_blur_rejects_bad_inputs() -> None:
    op = Blur(box_kernel(3), (2, 8, 8))
    with pytest.raises(ValueError, match=r"x has shape \(1, 1, 8, 8\); Blur expects \(B, 2, 8, 8\)"):
        op(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"x has shape \(2, 8, 8\)"):
        op(torch.zeros(2, 8, 8))
    with pytest.raises(TypeError, match="x has dtype torch.complex64; Blur expects a real tensor"):
        op(torch.zeros(1, 2, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"y has shape \(1, 2, 8, 9\)"):
        op.adjoint(torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match=r"y has shape \(1, 2, 7, 8\)"):
        op.pinv(torch.zeros(1, 2, 7, 8))
    with pytest.raises(ValueError, match=r"z has shape \(1, 2, 8\); Blur expects spectral coordinates"):
        op.v(torch.zeros(1, 2, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"z has shape \(1, 1, 8, 8\)"):
        op.u(torch.zeros(1, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="tol must be a finite number >= 0, got -1.0"):
        op.pinv(torch.zeros(1, 2, 8, 8), tol=-1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigma": 0.0}, r"sigma must be a finite number > 0 \(or one per axis\), got 0.0"),
        ({"sigma": -1.0}, r"sigma must be a finite number > 0 .*, got -1.0"),
        ({"sigma": float("nan")}, r"sigma must be a finite number > 0 .*, got nan"),
        ({"sigma": (1.0, 0.0)}, r"sigma must be a finite number > 0 .*, got \(1.0, 0.0\)"),
        ({"sigma": (1.0, 2.0, 3.0)}, r"sigma must be a number or a sequence of 2 numbers, got \(1.0, 2.0, 3.0\)"),
        ({"sigma": "wide"}, r"sigma must be a number or a sequence of 2 numbers, got 'wide'"),
        ({"sigma": 1.0, "size": 0}, r"size must be an integer >= 1 \(or one per axis\), got 0"),
        ({"sigma": 1.0, "size": (3, 2.5)}, r"size must be an integer >= 1 .*, got \(3, 2.5\)"),
        ({"sigma": 1.0, "ndim": 4}, "ndim must be 2 or 3, got 4"),
    ],
)
def test_gaussian_kernel_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gaussian_kernel(**kwargs)


def test_box_kernel_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"size must be an integer >= 1 \(or one per axis\), got \(3, 0\)"):
        box_kernel((3, 0))
    with pytest.raises(ValueError, match="ndim must be 2 or 3, got 1"):
        box_kernel(3, ndim=1)


def test_motion_kernel_rejects_bad_arguments() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="size must be an integer >= 1, got 0"):
        motion_kernel(0, g)
    with pytest.raises(ValueError, match="size must be an integer >= 1, got 7.5"):
        motion_kernel(7.5, g)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got NoneType"):
        motion_kernel(9, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"intensity must be a number in \[0, 1\], got 1.5"):
        motion_kernel(9, g, intensity=1.5)
    with pytest.raises(ValueError, match=r"intensity must be a number in \[0, 1\], got nan"):
        motion_kernel(9, g, intensity=float("nan"))
    with pytest.raises(ValueError, match="ndim must be 2 or 3, got 1"):
        motion_kernel(9, g, ndim=1)
