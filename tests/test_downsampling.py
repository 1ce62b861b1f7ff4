"""Downsampling (box, antialiased bicubic) and the separable/Kronecker SVD machinery.

Oracles from outside the project: NumPy block means via reshape, ``torch.nn.functional.avg_pool``,
``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` (same convention as the
``"truncate"`` boundary), an independent NumPy implementation of MATLAB ``imresize``'s antialiased
bicubic with symmetric padding (the ``"reflect"`` boundary), and dense ``torch.kron`` matrices with
``torch.linalg.svdvals`` / ``torch.linalg.pinv``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invdiff.operators.downsampling import BicubicDownsampling, BoxDownsampling, bicubic_matrix, box_matrix, keys_cubic
from invdiff.operators.separable import KroneckerOperator, SeparableOperator


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense(op: torch.nn.Module) -> torch.Tensor:
    n = math.prod(op.x_shape)
    return op(torch.eye(n, dtype=torch.float64).reshape(n, *op.x_shape)).reshape(n, -1).T


# ---- independent NumPy references -----------------------------------------------------------------
def np_keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    near, far = t <= 1, (t > 1) & (t < 2)
    out[near] = (a + 2) * t[near] ** 3 - (a + 3) * t[near] ** 2 + 1
    out[far] = a * t[far] ** 3 - 5 * a * t[far] ** 2 + 8 * a * t[far] - 4 * a
    return out


def np_imresize_down_1d(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """MATLAB-style imresize(x, 1/f, 'bicubic') along one axis: pad symmetrically, then weight each output."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    pad = 2 * f + 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="symmetric")
    out = np.empty(x.shape[:-1] + (n // f,))
    for i in range(n // f):
        u = (i + 1) * f + 0.5 * (1 - f)  # MATLAB's 1-based centre for scale 1/f
        left = int(np.floor(u - 2 * f))
        idx = np.arange(left, left + 4 * f + 2)  # 1-based input positions
        w = np_keys((u - idx) / f) / f
        w = w / w.sum()
        out[..., i] = xp[..., idx - 1 + pad] @ w
    return np.moveaxis(out, -1, axis)


def np_block_mean(x: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    b, c, *spatial = x.shape
    shape = [b, c]
    for n, f in zip(spatial, factors, strict=True):
        shape += [n // f, f]
    y = x.reshape(shape)
    return y.mean(axis=tuple(range(3, y.ndim, 2)))


# ---- box ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,factor",
    [((3, 8, 10), 2), ((2, 21, 15), 3), ((1, 6, 8, 4), 2), ((2, 5, 8, 6), (1, 2, 3)), ((1, 12, 12), 4)],
)
def test_box_matches_numpy_reshape_mean(shape: tuple[int, ...], factor: int | tuple[int, ...]) -> None:
    op = BoxDownsampling(shape, factor)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen(0))
    factors = factor if isinstance(factor, tuple) else (factor,) * (len(shape) - 1)
    np.testing.assert_allclose(op(x).numpy(), np_block_mean(x.numpy(), factors), rtol=1e-13, atol=1e-14)


def test_box_matches_avg_pool() -> None:
    x2 = torch.randn(2, 3, 12, 18, dtype=torch.float64, generator=gen(1))
    torch.testing.assert_close(BoxDownsampling((3, 12, 18), 3)(x2), F.avg_pool2d(x2, 3))
    x3 = torch.randn(1, 2, 4, 6, 8, dtype=torch.float64, generator=gen(2))
    torch.testing.assert_close(BoxDownsampling((2, 4, 6, 8), 2)(x3), F.avg_pool3d(x3, 2))


def test_box_singular_values_closed_form() -> None:
    op = BoxDownsampling((1, 6, 9), 3)
    s = op.singular_values()
    nonzero = s[s > 0]
    assert nonzero.numel() == 2 * 3  # one per low-resolution pixel
    torch.testing.assert_close(nonzero, torch.full_like(nonzero, 1 / 3))  # (1/sqrt(3))^2
    torch.testing.assert_close(torch.linalg.svdvals(dense(op))[:6], nonzero)


# ---- bicubic ------------------------------------------------------------------------------------------
def test_keys_kernel_values() -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, -0.5, -1.5, 2.5], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.5625, -0.0625, 0.0], dtype=torch.float64)
    torch.testing.assert_close(keys_cubic(t), expected)
    shifts = torch.rand(50, dtype=torch.float64, generator=gen(3))
    total = sum(keys_cubic(shifts - k) for k in range(-3, 4))  # partition of unity
    torch.testing.assert_close(total, torch.ones_like(total))


@pytest.mark.parametrize("size,factor", [((24, 36), 2), ((21, 15), 3), ((16, 20), 4), ((10, 12), 2), ((8, 8), 8)])
def test_bicubic_truncate_matches_torch_antialias(size: tuple[int, int], factor: int) -> None:
    op = BicubicDownsampling((2, *size), factor, boundary="truncate")
    x = torch.randn(3, 2, *size, dtype=torch.float64, generator=gen(4))
    ref = F.interpolate(x, size=(size[0] // factor, size[1] // factor), mode="bicubic", antialias=True,
                        align_corners=False)
    torch.testing.assert_close(op(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,factor", [((2, 12, 10), 2), ((1, 21, 15), 3), ((1, 16, 8), 4), ((1, 8, 6, 4), 2)])
def test_bicubic_reflect_matches_numpy_imresize(shape: tuple[int, ...], factor: int) -> None:
    op = BicubicDownsampling(shape, factor)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen(5))
    ref = x.numpy()
    for axis in range(2, x.ndim):
        ref = np_imresize_down_1d(ref, factor, axis)
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_bicubic_boundaries_agree_in_the_interior_and_reproduce_ramps() -> None:
    n, f = 32, 2
    rows = {b: bicubic_matrix(n, f, b) for b in ("reflect", "truncate", "periodic")}
    interior = slice(2, n // f - 2)  # outputs whose 4f-wide support stays inside the signal
    torch.testing.assert_close(rows["reflect"][interior], rows["truncate"][interior])
    torch.testing.assert_close(rows["reflect"][interior], rows["periodic"][interior])
    for m in rows.values():
        torch.testing.assert_close(m.sum(1), torch.ones(n // f, dtype=torch.float64))  # constants preserved
    ramp = torch.arange(n, dtype=torch.float64)
    centres = (torch.arange(n // f, dtype=torch.float64) + 0.5) * f - 0.5
    torch.testing.assert_close((rows["reflect"] @ ramp)[interior], centres[interior])


def test_bicubic_factor_one_is_identity_and_box_matrix_rows() -> None:
    torch.testing.assert_close(bicubic_matrix(7, 1), torch.eye(7, dtype=torch.float64))
    torch.testing.assert_close(box_matrix(6, 3), torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]) / 3.0,
                               check_dtype=False)
    op = BicubicDownsampling((2, 5, 7), 1)
    x = torch.randn(1, 2, 5, 7, generator=gen(6))
    torch.testing.assert_close(op(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_downsampling_follows_input_dtype(dtype: torch.dtype) -> None:
    op = BicubicDownsampling((1, 8, 8), 2)
    x = torch.randn(1, 1, 8, 8, dtype=dtype, generator=gen(7))
    assert op(x).dtype == dtype
    assert op.adjoint(op(x)).dtype == dtype and op.pinv(op(x)).dtype == dtype


# ---- separable / Kronecker machinery ---------------------------------------------------------------
def test_separable_dense_matrix_is_kronecker_product() -> None:
    a_h = torch.randn(3, 5, dtype=torch.float64, generator=gen(8))
    a_w = torch.randn(4, 2, dtype=torch.float64, generator=gen(9))
    op = SeparableOperator([a_h, a_w], channels=2)
    expected = torch.kron(torch.eye(2, dtype=torch.float64), torch.kron(a_h, a_w))
    torch.testing.assert_close(dense(op), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "shapes,ranks",
    [([(3, 5), (4, 2)], [None, None]), ([(4, 5), (6, 6), (3, 4)], [None, 2, None]), ([(6, 3)], [None])],
    ids=["2d_wide_tall", "3d_rank_deficient", "1d_tall"],
)
def test_separable_svd_and_pinv_match_dense(shapes: list[tuple[int, int]], ranks: list[int | None]) -> None:
    g = gen(10)
    mats = [
        torch.randn(m, n, dtype=torch.float64, generator=g) if r is None
        else torch.randn(m, r, dtype=torch.float64, generator=g) @ torch.randn(r, n, dtype=torch.float64, generator=g)
        for (m, n), r in zip(shapes, ranks, strict=True)
    ]
    op = SeparableOperator(mats, channels=2)
    a = dense(op)
    # Singular values: the same multiset as the dense SVD (zeros padded to x's size).
    ours = op.singular_values().flatten().sort(descending=True).values
    ref = torch.linalg.svdvals(a)
    ref = torch.cat([ref, torch.zeros(ours.numel() - ref.numel(), dtype=ref.dtype)])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    # Pseudo-inverse equals the dense Moore-Penrose pseudo-inverse.
    y = torch.randn(3, *op.y_shape, dtype=torch.float64, generator=g)
    ref_pinv = (torch.linalg.pinv(a) @ y.reshape(3, -1).T).T.reshape(3, *op.x_shape)
    torch.testing.assert_close(op.pinv(y), ref_pinv, rtol=1e-8, atol=1e-8)
    assert math.isclose(float(op.opnorm()), float(ref[0]), rel_tol=1e-12)


def test_kronecker_channel_axis_and_identity() -> None:
    r = torch.randn(3, 4, dtype=torch.float64, generator=gen(11))
    op = KroneckerOperator((4, 5, 6), [r, None, None])
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, generator=gen(12))
    torch.testing.assert_close(op(x), torch.einsum("cb,nbhw->nchw", r, x))
    identity = KroneckerOperator((2, 3), [None, None])
    torch.testing.assert_close(identity(x[:, 0, :2, :3]), x[:, 0, :2, :3])
    torch.testing.assert_close(identity.singular_values(), torch.ones(2, 3, dtype=torch.float64))


# ---- error paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [BoxDownsampling, BicubicDownsampling])
def test_non_divisible_size_names_shape_and_factor(cls: type) -> None:
    with pytest.raises(ValueError, match=r"shape \(1, 37, 31\) is not divisible by factor 2: spatial size 37"):
        cls((1, 37, 31), 2)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 9, 8\) is not divisible by factor \(1, 2, 2\)"):
        cls((1, 4, 9, 8), (1, 2, 2))


@pytest.mark.parametrize("factor", [0, -2, 2.5, 2.0, True, "2", (2,), (2, 2, 2)])
@pytest.mark.parametrize("cls", [BoxDownsampling, BicubicDownsampling])
def test_bad_factor(cls: type, factor: object) -> None:
    with pytest.raises(ValueError, match=r"factor must be an integer >= 1 \(or a sequence of 2 such integers\)"):
        cls((1, 8, 8), factor)


@pytest.mark.parametrize("shape", [(8, 8), (1, 2, 3, 4, 5), (1, 0, 8), (1, 8.0, 8), "abc"])
def test_bad_shape(shape: object) -> None:
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\) or \(C, D, H, W\) with positive ints"):
        BoxDownsampling(shape, 2)  # type: ignore[arg-type]


def test_bad_boundary_and_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match=r"boundary must be one of \('reflect', 'truncate', 'periodic'\), got 'zero'"):
        BicubicDownsampling((1, 8, 8), 2, boundary="zero")  # type: ignore[arg-type]
    op = BoxDownsampling((2, 8, 8), 2)
    with pytest.raises(ValueError, match=r"x has shape \(1, 2, 8, 6\); BoxDownsampling expects \(B, 2, 8, 8\)"):
        op(torch.zeros(1, 2, 8, 6))
    with pytest.raises(ValueError, match=r"y has shape \(1, 2, 8, 8\)"):
        op.pinv(torch.zeros(1, 2, 8, 8))


def test_separable_constructor_errors() -> None:
    good = torch.ones(2, 4)
    with pytest.raises(ValueError, match="matrices must be a non-empty sequence"):
        SeparableOperator([])
    with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
        SeparableOperator([good], channels=0)
    with pytest.raises(ValueError, match=r"matrices\[0\] contains NaN or Inf"):
        SeparableOperator([torch.tensor([[1.0, float("nan")]])])
    with pytest.raises(TypeError, match=r"matrices\[1\] must be a real floating-point tensor, got dtype torch.complex64"):
        SeparableOperator([good, torch.ones(2, 2, dtype=torch.complex64)])
    with pytest.raises(ValueError, match=r"matrices\[0\] must be a 2-D tensor \(m, n\), got shape \(4,\)"):
        SeparableOperator([torch.ones(4)])
    with pytest.raises(ValueError, match="spatial_shape is required when some axis has no matrix"):
        SeparableOperator([good, None])
    with pytest.raises(ValueError, match=r"matrices\[1\] must have shape \(m, 5\) with m >= 1, got \(2, 4\)"):
        SeparableOperator([None, good], spatial_shape=(4, 5))
    with pytest.raises(ValueError, match="matrices must be a sequence with one entry per axis of shape"):
        KroneckerOperator((2, 4), [good])
