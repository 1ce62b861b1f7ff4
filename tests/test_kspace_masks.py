"""k-space masks against fastMRI's conventions (through MONAI's port, driven by the same uniform
draws / offsets) and against the statistics they promise; Poisson-disc acceleration and spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

from invdiff.operators.kspace_masks import (
    _random_columns,
    equispaced_column_mask,
    mask_acceleration,
    poisson_disc_mask,
    random_column_mask,
)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _monai_columns(transform: RandomKspaceMask | EquispacedKspaceMask, width: int, seed: int) -> torch.Tensor:
    transform.set_random_state(seed=seed)
    transform(torch.zeros(1, 4, width, 2))  # (coils, H, W, re/im): MONAI samples along W
    return transform.mask.reshape(width).bool()


# ---- random column masks ------------------------------------------------------------------------
@pytest.mark.parametrize("width,acc,cf", [(368, 4, 0.08), (320, 8, 0.04), (31, 3, 0.1), (10, 2, 0.3), (37, 4.5, 0.15)])
def test_random_columns_equal_monai_port_of_fastmri(width: int, acc: float, cf: float) -> None:
    """Fed the uniform draws MONAI makes, the pattern is MONAI's (= fastMRI RandomMaskFunc) exactly."""
    for seed in range(5):
        reference = _monai_columns(RandomKspaceMask([cf], [acc], spatial_dims=2, is_complex=True), width, seed)
        rs = np.random.RandomState(seed)
        rs.randint(0, 1)  # MONAI first draws which (cf, acc) pair to use
        uniform = torch.from_numpy(rs.uniform(size=width))
        assert torch.equal(_random_columns(uniform, acc, cf), reference)


@pytest.mark.parametrize(
    "width,cf,start", [(10, 0.3, 4), (11, 0.3, 4), (5, 0.4, 2), (368, 0.08, 170), (320, 0.04, 154)]
)
def test_random_mask_centre_block_is_fastmri(width: int, cf: float, start: int) -> None:
    num_low = round(width * cf)
    for seed in range(3):
        m = random_column_mask(width, 1e9, cf, generator=g(seed))  # acceleration ~inf: only the centre survives
        assert m.sum() == num_low
        assert torch.nonzero(m).flatten().tolist() == list(range(start, start + num_low))


@pytest.mark.parametrize("width,acc,cf", [(368, 4, 0.08), (320, 8, 0.04), (64, 3, 0.1)])
def test_random_mask_expected_acceleration(width: int, acc: float, cf: float) -> None:
    counts = torch.tensor([float(random_column_mask(width, acc, cf, generator=g(s)).sum()) for s in range(400)])
    num_low = round(width * cf)
    p = (width / acc - num_low) / (width - num_low)
    std = math.sqrt((width - num_low) * p * (1 - p) / len(counts))
    assert abs(float(counts.mean()) - width / acc) < 4 * std


def test_random_mask_shapes_seeds_and_global_rng(global_rng_guard: None) -> None:
    a = random_column_mask((3, 6, 40), 4, 0.1, generator=g(0))
    assert a.shape == (3, 6, 40) and a.dtype == torch.bool
    assert bool((a == a[0, 0]).all()), "columns must be constant over D and H"
    assert torch.equal(a, random_column_mask((3, 6, 40), 4, 0.1, generator=g(0)))
    assert not torch.equal(a, random_column_mask((3, 6, 40), 4, 0.1, generator=g(1)))
    assert random_column_mask(40, 4, 0.1, generator=g(0)).shape == (40,)
    assert torch.equal(random_column_mask((7, 40), 4, 0.1, generator=g(0))[0], a[0, 0])


# ---- equispaced column masks ----------------------------------------------------------------------
@pytest.mark.parametrize("width,acc,cf", [(368, 4, 0.08), (320, 8, 0.04), (37, 3, 0.1), (64, 6, 0.08)])
def test_equispaced_fraction_matches_monai_port_of_fastmri(width: int, acc: float, cf: float) -> None:
    """Given the offset MONAI's random state draws, the pattern is MONAI's EquispacedKspaceMask
    (= fastMRI EquispacedMaskFractionFunc) exactly."""
    for seed in range(6):
        reference = _monai_columns(EquispacedKspaceMask([cf], [acc], spatial_dims=2, is_complex=True), width, seed)
        rs = np.random.RandomState(seed)
        rs.randint(0, 1)
        num_low = round(width * cf)
        offset = rs.randint(0, round(acc * (num_low - width) / (num_low * acc - width)))
        assert torch.equal(equispaced_column_mask(width, acc, cf, offset=offset), reference)


@pytest.mark.parametrize("width,acc,cf", [(368, 4, 0.08), (320, 8, 0.04), (640, 4, 0.08)])
def test_equispaced_fraction_reaches_target_acceleration(width: int, acc: float, cf: float) -> None:
    for seed in range(5):
        m = equispaced_column_mask(width, acc, cf, generator=g(seed))
        assert abs(mask_acceleration(m) - acc) / acc < 0.05


@pytest.mark.parametrize("width,acc,cf", [(368, 4, 0.08), (33, 3, 0.1), (20, 2, 0.2)])
def test_equispaced_spacing_is_exact(width: int, acc: int, cf: float) -> None:
    num_low = round(width * cf)
    start = (width - num_low + 1) // 2
    centre = set(range(start, start + num_low))
    for offset in range(acc):
        m = equispaced_column_mask(width, acc, cf, variant="spacing", offset=offset)
        assert set(torch.nonzero(m).flatten().tolist()) == centre | set(range(offset, width, acc))


def test_equispaced_offsets_are_seeded() -> None:
    masks = [equispaced_column_mask((4, 64), 4, 0.08, generator=g(s)) for s in range(12)]
    assert torch.equal(masks[0], equispaced_column_mask((4, 64), 4, 0.08, generator=g(0)))
    assert len({tuple(m[0].tolist()) for m in masks}) > 1, "different seeds must give different offsets"
    assert bool((masks[0] == masks[0][0]).all())


# ---- Poisson disc -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,acc,calib", [((64, 64), 4, 12), ((96, 80), 8, 16), ((48, 64), 6, 10), ((31, 37), 3, 5)])
def test_poisson_acceleration_and_calibration(shape: tuple[int, int], acc: float, calib: int) -> None:
    for seed in range(3):
        m = poisson_disc_mask(shape, acc, calib, generator=g(seed))
        assert m.shape == shape and m.dtype == torch.bool
        assert abs(mask_acceleration(m) - acc) / acc <= 0.05  # the default tol; the brief asks ~10%
        y0, z0 = (shape[0] - calib + 1) // 2, (shape[1] - calib + 1) // 2
        assert bool(m[y0 : y0 + calib, z0 : z0 + calib].all())


def test_poisson_is_variable_density_and_has_no_clumps() -> None:
    n = 96
    m = poisson_disc_mask((n, n), 8, 8, generator=g(0))
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    rho = torch.sqrt(((i - n // 2) / (n / 2)) ** 2 + ((j - n // 2) / (n / 2)) ** 2)
    inner = m[(rho > 0.15) & (rho < 0.4)].float().mean()
    outer = m[rho > 0.8].float().mean()
    assert inner > 2 * outer
    # Poisson-disc: outside the centre no sampled point has a sampled 4-neighbour (a uniform random
    # mask of the same density would give that to ~1 - (1 - 1/8)^4 = 41 % of its points).
    f = m.float()
    neighbours = torch.zeros_like(f)
    neighbours[1:] += f[:-1]
    neighbours[:-1] += f[1:]
    neighbours[:, 1:] += f[:, :-1]
    neighbours[:, :-1] += f[:, 1:]
    far = m & (rho > 0.5)
    assert far.sum() > 100
    assert float((neighbours[far] > 0).float().mean()) == 0.0


def test_poisson_seeds_3d_layout_and_global_rng(global_rng_guard: None) -> None:
    a = poisson_disc_mask((32, 40), 4, 6, generator=g(0))
    assert torch.equal(a, poisson_disc_mask((32, 40), 4, 6, generator=g(0)))
    assert not torch.equal(a, poisson_disc_mask((32, 40), 4, 6, generator=g(1)))
    v = poisson_disc_mask((32, 5, 40), 4, (6, 6), generator=g(0))
    assert v.shape == (32, 5, 40)
    assert torch.equal(v[:, 3, :], a) and bool((v == v[:, :1, :]).all()), "constant along the readout H"
    assert bool(poisson_disc_mask((8, 8), 1, 0, generator=g(0)).all())


def test_mask_acceleration() -> None:
    assert mask_acceleration(torch.tensor([[1, 0], [0, 0]])) == 4.0
    assert mask_acceleration(torch.zeros(3, dtype=torch.bool)) == math.inf
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        mask_acceleration([1, 0])  # type: ignore[arg-type]


# ---- error paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("acc", [0, -1, 0.5, math.nan, math.inf, True, "4"])
def test_bad_acceleration(acc: object) -> None:
    for fn in (random_column_mask, equispaced_column_mask):
        with pytest.raises(ValueError, match=r"acceleration must be a finite number >= 1, got"):
            fn((8, 16), acc, 0.1)  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"poisson_disc_mask: acceleration must be a finite number >= 1"):
        poisson_disc_mask((16, 16), acc, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("cf", [0, 1, 1.5, -0.1, math.nan, None])
def test_bad_center_fraction(cf: object) -> None:
    with pytest.raises(ValueError, match=r"random_column_mask: center_fraction must be a number in \(0, 1\), got"):
        random_column_mask(16, 4, cf)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"equispaced_column_mask: center_fraction must be a number in \(0, 1\)"):
        equispaced_column_mask(16, 4, cf)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [0, -3, (0, 4), (4, -1), (2.5, 4), (1, 2, 3, 4), (), True, "16", None])
def test_bad_column_shape(shape: object) -> None:
    with pytest.raises(ValueError, match=r"random_column_mask: shape must be 1, 2 or 3 positive integers, got"):
        random_column_mask(shape, 4, 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [16, (16,), (0, 16), (4, 4, 4, 4), (16, 16.0)])
def test_bad_poisson_shape(shape: object) -> None:
    with pytest.raises(ValueError, match=r"poisson_disc_mask: shape must be 2 or 3 positive integers, got"):
        poisson_disc_mask(shape, 4, 2)  # type: ignore[arg-type]


def test_equispaced_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"variant must be 'fraction' or 'spacing', got 'random'"):
        equispaced_column_mask(32, 4, 0.1, variant="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"variant='spacing' needs an integer acceleration, got 2.5"):
        equispaced_column_mask(32, 2.5, 0.1, variant="spacing")
    with pytest.raises(ValueError, match=r"offset must be an integer in \[0, 4\), got 4"):
        equispaced_column_mask(32, 4, 0.1, variant="spacing", offset=4)
    with pytest.raises(ValueError, match=r"offset must be an integer in \[0, 4\), got -1"):
        equispaced_column_mask(32, 4, 0.1, variant="spacing", offset=-1)
    with pytest.raises(ValueError, match=r"centre block of round\(32 \* 0.3\) = 10 columns already gives"):
        equispaced_column_mask(32, 4, 0.3)


def test_poisson_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"calibration block 12x12 \(144 samples\) exceeds the budget"):
        poisson_disc_mask((32, 32), 8, 12)
    for calib in (-1, 40, (4,), (4, 4, 4), 2.0, (4, 40)):
        with pytest.raises(
            ValueError, match=r"calib must be an integer or a pair of integers in \[0, \(32, 32\)\], got"
        ):
            poisson_disc_mask((32, 32), 4, calib)  # type: ignore[arg-type]
    for tol in (0, 1, -0.1, "0.1"):
        with pytest.raises(ValueError, match=r"tol must be a number in \(0, 1\), got"):
            poisson_disc_mask((32, 32), 4, 4, tol=tol)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1, got 0"):
        poisson_disc_mask((32, 32), 4, 4, max_iter=0)
    # A 5x7 grid at acceleration 2 jumps from 19 to fewer than 17 samples: no slope reaches 2 +- 5 %.
    with pytest.raises(ValueError, match=r"could not reach acceleration 2.0 within tol=0.05 on a 5x7 grid"):
        poisson_disc_mask((5, 4, 7), 2, 2, generator=g(0))
