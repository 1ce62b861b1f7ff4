"""Masking / inpainting: the operator against NumPy, the mask generators' statistics, and error paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from invdiff.operators.masking import (
    Inpainting,
    MaskOperator,
    box_mask,
    brush_stroke_mask,
    half_mask,
    random_pixel_mask,
    validate_mask,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- the operator ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)], ids=["2d", "3d"])
def test_inpainting_matches_numpy_and_keeps_full_shape(spatial: tuple[int, ...]) -> None:
    mask = random_pixel_mask(spatial, 0.5, generator=gen(0))
    op = Inpainting(mask, channels=3)
    x = torch.randn(2, 3, *spatial, dtype=torch.float64, generator=gen(1))
    y = op(x)
    expected = np.where(mask.numpy()[None, None], x.numpy(), 0.0)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y.numpy(), expected)
    assert op.x_shape == op.y_shape == (3, *spatial)


def test_inpainting_per_channel_mask() -> None:
    mask = random_pixel_mask((2, 5, 6), 0.5, generator=gen(3))
    op = Inpainting(mask.to(torch.int64), channels=None)
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64, generator=gen(4))
    np.testing.assert_array_equal(op(x).numpy(), np.where(mask.numpy()[None], x.numpy(), 0.0))
    assert torch.equal(op.observed, mask)


def test_inpainting_svd_pinv_and_dense_reference() -> None:
    mask = random_pixel_mask((4, 5), 0.4, generator=gen(5))
    op = Inpainting(mask, channels=2).double()
    n = 2 * 4 * 5
    dense = op(torch.eye(n, dtype=torch.float64).reshape(n, 2, 4, 5)).reshape(n, n).T
    np.testing.assert_array_equal(dense.numpy(), np.diag(np.tile(mask.numpy().ravel(), 2).astype(float)))
    y = torch.randn(3, 2, 4, 5, dtype=torch.float64, generator=gen(6))
    pinv_ref = (torch.linalg.pinv(dense) @ y.reshape(3, n).T).T.reshape(y.shape)
    torch.testing.assert_close(op.pinv(y), pinv_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.singular_values(), mask.double().expand(2, 4, 5))
    torch.testing.assert_close(op.opnorm(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inpainting_follows_input_dtype(dtype: torch.dtype) -> None:
    op = Inpainting(half_mask((6, 6), "top"), channels=1)
    x = torch.randn(1, 1, 6, 6, dtype=dtype, generator=gen(7))
    assert op(x).dtype == dtype and op.adjoint(x).dtype == dtype and op.pinv(x).dtype == dtype


def test_all_zero_mask_has_zero_opnorm_and_pinv() -> None:
    op = Inpainting(torch.zeros(3, 4, dtype=torch.bool), channels=1)
    y = torch.randn(2, 1, 3, 4, generator=gen(8))
    assert float(op.pinv(y).abs().max()) == 0.0
    assert float(op.opnorm()) == 0.0


# ---- mask generators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 48), (16, 20, 24)], ids=["pixels", "voxels"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.85])
def test_random_pixel_mask_fraction_within_binomial_tolerance(shape: tuple[int, ...], keep: float) -> None:
    mask = random_pixel_mask(shape, keep, generator=gen(11))
    n = math.prod(shape)
    assert mask.dtype == torch.bool and tuple(mask.shape) == shape
    kept = int(mask.sum())
    # 5 standard deviations of Binomial(n, keep): fails by chance with probability < 1e-6.
    assert abs(kept - n * keep) <= 5 * math.sqrt(n * keep * (1 - keep))


def test_random_pixel_mask_seeding_and_extremes(global_rng_guard: None) -> None:
    a = random_pixel_mask((32, 32), 0.5, generator=gen(1))
    assert torch.equal(a, random_pixel_mask((32, 32), 0.5, generator=gen(1)))
    assert not torch.equal(a, random_pixel_mask((32, 32), 0.5, generator=gen(2)))
    assert bool(random_pixel_mask((5, 5), 1.0, generator=gen(0)).all())
    assert not bool(random_pixel_mask((5, 5), 0.0, generator=gen(0)).any())


def test_box_mask_given_corner_matches_numpy() -> None:
    mask = box_mask((10, 12), (3, 5), position=(2, 6))
    expected = np.ones((10, 12), dtype=bool)
    expected[2:5, 6:11] = False
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_box_mask_center_and_3d() -> None:
    mask = box_mask((9, 10), 4)  # centred: corner ((9-4)//2, (10-4)//2) = (2, 3)
    expected = np.ones((9, 10), dtype=bool)
    expected[2:6, 3:7] = False
    np.testing.assert_array_equal(mask.numpy(), expected)
    vol = box_mask((6, 7, 8), (2, 3, 4), position=(1, 2, 3))
    expected3 = np.ones((6, 7, 8), dtype=bool)
    expected3[1:3, 2:5, 3:7] = False
    np.testing.assert_array_equal(vol.numpy(), expected3)


def test_box_mask_random_position_fits_and_is_seeded(global_rng_guard: None) -> None:
    masks = [box_mask((20, 16, 12), (5, 4, 3), position="random", generator=gen(s)) for s in range(6)]
    for m in masks:
        assert int((~m).sum()) == 5 * 4 * 3  # the whole box is inside the volume
        idx = (~m).nonzero()
        assert tuple((idx.max(0).values - idx.min(0).values + 1).tolist()) == (5, 4, 3)
    assert torch.equal(masks[0], box_mask((20, 16, 12), (5, 4, 3), position="random", generator=gen(0)))
    assert len({m.numpy().tobytes() for m in masks}) > 1


@pytest.mark.parametrize(
    "side,slicer",
    [
        ("left", np.s_[:, :15]),
        ("right", np.s_[:, -15:]),
        ("top", np.s_[:18, :]),
        ("bottom", np.s_[-18:, :]),
    ],
)
def test_half_mask_2d_odd_size(side: str, slicer: tuple) -> None:
    mask = half_mask((37, 31), side)  # odd: the missing half has n // 2 entries
    expected = np.ones((37, 31), dtype=bool)
    expected[slicer] = False
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_half_mask_3d_front_back() -> None:
    front, back = half_mask((5, 4, 3), "front"), half_mask((5, 4, 3), "back")
    assert not bool(front[:2].any()) and bool(front[2:].all())
    assert bool(back[:3].all()) and not bool(back[3:].any())


def test_brush_stroke_mask_is_seeded_irregular_and_connected(global_rng_guard: None) -> None:
    a = brush_stroke_mask((64, 64), generator=gen(0))
    assert a.dtype == torch.bool and a.shape == (64, 64)
    assert torch.equal(a, brush_stroke_mask((64, 64), generator=gen(0)))
    fractions = []
    for s in range(1, 9):
        m = brush_stroke_mask((64, 64), generator=gen(s))
        assert not torch.equal(m, a)
        fractions.append(float((~m).float().mean()))
    assert 0.02 < float(np.mean(fractions)) < 0.6  # holes, not an empty or a full mask
    # One stroke is one connected hole (consecutive capsules share their end points).
    one = brush_stroke_mask((48, 48), generator=gen(3), strokes=(1, 1), vertices=(6, 6))
    _, components = ndimage.label(~one.numpy())
    assert components == 1


def test_brush_stroke_mask_width_bounds_hole_size() -> None:
    # A single straight segment drawn with diameter w covers at most (length + w) * w pixels.
    m = brush_stroke_mask((60, 60), generator=gen(4), strokes=(1, 1), vertices=(1, 1), width=(0.1, 0.1),
                          length=(0.3, 0.3), turn=0.0)
    missing = int((~m).sum())
    w, length = 6.0, 18.0
    assert 0 < missing <= (length + w) * (w + 1)


def test_brush_stroke_mask_3d() -> None:
    m = brush_stroke_mask((12, 14, 16), generator=gen(5))
    assert m.shape == (12, 14, 16) and bool(m.any()) and not bool(m.all())


# ---- error paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mask,exc,match",
    [
        (torch.tensor([[0.0, float("nan")]]), ValueError, "mask contains NaN or Inf"),
        (torch.tensor([[0.0, float("inf")]]), ValueError, "mask contains NaN or Inf"),
        (torch.tensor([[0.0, 0.5]]), ValueError, r"mask must be boolean or contain only 0 and 1, got value 0.5"),
        (torch.tensor([[0, 2]]), ValueError, r"contain only 0 and 1, got value 2"),
        (torch.ones(2, 2, dtype=torch.complex64), TypeError, "mask must be a bool or real 0/1 tensor"),
        (np.ones((2, 2)), TypeError, "mask must be a torch.Tensor"),
        (torch.ones(0, 3), ValueError, "mask must not be empty"),
    ],
)
def test_validate_mask_errors(mask: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        validate_mask(mask)
    with pytest.raises(exc, match=match):
        Inpainting(mask, channels=1)  # type: ignore[arg-type]


def test_inpainting_rank_and_channels_errors() -> None:
    with pytest.raises(ValueError, match=r"mask must be spatial, \(H, W\) or \(D, H, W\).*got shape \(5,\)"):
        Inpainting(torch.ones(5, dtype=torch.bool), channels=1)
    with pytest.raises(ValueError, match=r"mask must be spatial.*got shape \(1, 2, 3, 4\)"):
        Inpainting(torch.ones(1, 2, 3, 4, dtype=torch.bool), channels=2)
    with pytest.raises(ValueError, match="with channels=None the mask must have the full x shape"):
        Inpainting(torch.ones(3, 4, dtype=torch.bool), channels=None)
    with pytest.raises(ValueError, match="channels must be an integer >= 1 or None, got 0"):
        Inpainting(torch.ones(3, 4, dtype=torch.bool), channels=0)
    with pytest.raises(ValueError, match="does not broadcast to x_shape"):
        MaskOperator(torch.ones(3, 4, dtype=torch.bool), (2, 3, 5))


def test_mask_shape_mismatch_with_x() -> None:
    op = Inpainting(torch.ones(4, 5, dtype=torch.bool), channels=2)
    with pytest.raises(ValueError, match=r"x has shape \(1, 2, 5, 4\); Inpainting expects \(B, 2, 4, 5\)"):
        op(torch.zeros(1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"x has shape \(2, 4, 5\)"):
        op(torch.zeros(2, 4, 5))  # missing batch or channel axis
    with pytest.raises(ValueError, match=r"y has shape \(1, 3, 4, 5\)"):
        op.pinv(torch.zeros(1, 3, 4, 5))


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), True, "half"])
def test_random_pixel_mask_fraction_out_of_range(fraction: object) -> None:
    with pytest.raises(ValueError, match=r"keep_fraction must be a number in \[0, 1\]"):
        random_pixel_mask((4, 4), fraction, generator=gen(0))  # type: ignore[arg-type]


def test_generator_shape_errors() -> None:
    with pytest.raises(ValueError, match="shape must be a non-empty sequence of positive ints, got"):
        random_pixel_mask((4, 0), 0.5)
    with pytest.raises(ValueError, match=r"shape must be 2D \(H, W\) or 3D \(D, H, W\), got \(8,\)"):
        box_mask((8,), 2)
    with pytest.raises(ValueError, match=r"shape must be 2D \(H, W\) or 3D"):
        half_mask((2, 3, 4, 5), "left")
    with pytest.raises(ValueError, match=r"shape must be 2D \(H, W\) or 3D"):
        brush_stroke_mask((16,), generator=gen(0))


def test_box_and_half_and_brush_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"box_size \(9, 2\) does not fit in shape \(8, 8\)"):
        box_mask((8, 8), (9, 2))
    with pytest.raises(ValueError, match=r"box_size must be an int >= 1"):
        box_mask((8, 8), 0)
    with pytest.raises(ValueError, match=r"box at corner \(6, 0\) with size \(3, 3\) extends outside shape \(8, 8\)"):
        box_mask((8, 8), 3, position=(6, 0))
    with pytest.raises(ValueError, match="position must be 'center', 'random' or a corner index tuple, got 'middle'"):
        box_mask((8, 8), 3, position="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"side must be one of .* got 'up'"):
        half_mask((8, 8), "up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"side 'front' needs a 3D shape"):
        half_mask((8, 8), "front")
    with pytest.raises(ValueError, match=r"strokes must be a pair \(low, high\) of ints with 1 <= low <= high, got \(3, 1\)"):
        brush_stroke_mask((8, 8), strokes=(3, 1))
    with pytest.raises(ValueError, match=r"width must be a pair \(low, high\) of finite numbers"):
        brush_stroke_mask((8, 8), width=(0.1, float("nan")))
    with pytest.raises(ValueError, match="turn must be a finite number >= 0, got -1"):
        brush_stroke_mask((8, 8), turn=-1.0)
