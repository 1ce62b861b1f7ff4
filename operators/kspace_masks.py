"""Cartesian k-space sampling masks: fastMRI column masks and variable-density Poisson-disc masks.

Every mask is a ``torch.bool`` tensor laid out like the centred k-space it samples (zero
frequency at index ``n // 2``, the ``fftnc`` convention): ``True`` = acquired. Randomness comes
only from the ``generator`` argument (``None`` means torch's default generator, as in
``torch.rand``); the same generator state gives the same mask.

Layout conventions (fastMRI's): a 2D slice ``(H, W)`` is read out along ``H`` and phase-encoded
along ``W``, so column masks select whole columns of the last axis. A 3D volume ``(D, H, W)``
keeps ``H`` as the readout; column masks select columns of ``W`` (the same for every ``D``),
and ``poisson_disc_mask`` samples the two phase-encode axes ``(D, W)`` jointly.

Column masks follow ``facebookresearch/fastMRI`` ``fastmri/data/subsample.py`` exactly (the
formulas, not the NumPy random streams):

* ``num_low = round(W * center_fraction)`` centre columns (Python's ``round``), starting at
  column ``(W - num_low + 1) // 2``;
* random (``RandomMaskFunc``): every column is kept with probability
  ``(W / acceleration - num_low) / (W - num_low)`` and the centre block is added, so the
  expected number of columns is ``W / acceleration``;
* equispaced, ``variant="fraction"`` (``EquispacedMaskFractionFunc``, also MONAI's
  ``EquispacedKspaceMask``, the default): columns ``round(offset + j * a')`` for
  ``offset + j a' < W - 1`` with the adjusted spacing
  ``a' = acceleration (num_low - W) / (num_low acceleration - W)`` and a random integer offset in
  ``[0, round(a'))``, plus the centre block; the total is close to ``W / acceleration``;
* equispaced, ``variant="spacing"`` (``EquiSpacedMaskFunc``): every ``acceleration``-th column
  from a random offset in ``[0, acceleration)``, plus the centre block (more than
  ``W / acceleration`` columns in total).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "equispaced_column_mask",
    "mask_acceleration",
    "poisson_disc_mask",
    "random_column_mask",
]


def random_column_mask(
    shape: int | Sequence[int],
    acceleration: float,
    center_fraction: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """fastMRI random column mask (``RandomMaskFunc``): a centre block plus random columns.

    Maths: ``num_low = round(W cf)``; column ``j`` is kept if ``u_j < p`` with ``u_j ~ U(0, 1)`` and
    ``p = (W / acceleration - num_low) / (W - num_low)``, or if it is a centre column; so
    ``E[#columns] = W / acceleration``.

    Args:
        shape: the width ``W`` (an ``int``, giving a ``(W,)`` mask) or the k-space shape
            ``(W,)``, ``(H, W)`` or ``(D, H, W)``; columns are selected along the last axis.
        acceleration: target acceleration ``>= 1`` (float allowed).
        center_fraction: fraction of fully sampled centre columns, in ``(0, 1)``.
        generator: source of randomness (``W`` uniform draws per call).

    Returns:
        ``torch.bool`` mask of ``shape``, the same for every row (and slice).

    Raises:
        ValueError: bad ``shape``, ``acceleration`` or ``center_fraction``.

    Examples:
        >>> m = random_column_mask((4, 10), 4, 0.3, generator=torch.Generator().manual_seed(0))
        >>> m.shape, m.dtype, bool(m[:, 4:7].all())
        (torch.Size([4, 10]), torch.bool, True)
    """
    full = _check_shape(shape, "random_column_mask", (1, 2, 3))
    acceleration = _check_acceleration(acceleration, "random_column_mask")
    center_fraction = _check_center_fraction(center_fraction, "random_column_mask")
    width = full[-1]
    uniform = torch.rand(width, dtype=torch.float64, generator=generator)
    return _expand_columns(_random_columns(uniform, acceleration, center_fraction), full)


def equispaced_column_mask(
    shape: int | Sequence[int],
    acceleration: float,
    center_fraction: float,
    *,
    variant: Literal["fraction", "spacing"] = "fraction",
    offset: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """fastMRI equispaced column mask: a centre block plus equally spaced columns from a random offset.

    Args:
        shape: the width ``W`` (``int``) or the k-space shape ``(W,)``, ``(H, W)`` or ``(D, H, W)``.
        acceleration: target acceleration ``>= 1``; an integer for ``variant="spacing"``.
        center_fraction: fraction of fully sampled centre columns, in ``(0, 1)``.
        variant: ``"fraction"`` (fastMRI ``EquispacedMaskFractionFunc`` / MONAI
            ``EquispacedKspaceMask``: spacing adjusted so the total is ``~W / acceleration``) or
            ``"spacing"`` (fastMRI ``EquiSpacedMaskFunc``: spacing exactly ``acceleration``).
        offset: first non-centre column; drawn uniformly from ``[0, round(spacing))`` with
            ``generator`` when ``None``.
        generator: source of randomness (one integer draw, only when ``offset`` is ``None``).

    Returns:
        ``torch.bool`` mask of ``shape``.

    Raises:
        ValueError: bad arguments; for ``"fraction"``, a centre block that already holds
            ``W / acceleration`` columns or more (the adjusted spacing is then undefined).

    Examples:
        >>> m = equispaced_column_mask(16, 4, 0.125, variant="spacing", offset=1)
        >>> torch.nonzero(m).flatten().tolist()
        [1, 5, 7, 8, 9, 13]
    """
    who = "equispaced_column_mask"
    full = _check_shape(shape, who, (1, 2, 3))
    acceleration = _check_acceleration(acceleration, who)
    center_fraction = _check_center_fraction(center_fraction, who)
    width = full[-1]
    num_low = round(width * center_fraction)
    mask = _centre_block(width, num_low)
    if variant == "fraction":
        if num_low * acceleration >= width:
            raise ValueError(
                f"{who}: the centre block of round({width} * {center_fraction}) = {num_low} columns already gives "
                f"acceleration {width / max(num_low, 1):.3g} <= {acceleration}; use a smaller center_fraction or "
                "acceleration, or variant='spacing'"
            )
        spacing = acceleration * (num_low - width) / (num_low * acceleration - width)
    elif variant == "spacing":
        if acceleration != int(acceleration):
            raise ValueError(f"{who}: variant='spacing' needs an integer acceleration, got {acceleration!r}")
        spacing = float(int(acceleration))
    else:
        raise ValueError(f"{who}: variant must be 'fraction' or 'spacing', got {variant!r}")
    high = round(spacing)
    if offset is None:
        offset = int(torch.randint(0, high, (1,), generator=generator))
    elif isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < high:
        raise ValueError(f"{who}: offset must be an integer in [0, {high}), got {offset!r}")
    if variant == "fraction":
        # numpy.arange with a float step and round-half-to-even, exactly as fastMRI/MONAI.
        columns = np.around(np.arange(offset, width - 1, spacing)).astype(np.int64)
    else:
        columns = np.arange(offset, width, int(spacing))
    mask[torch.from_numpy(columns)] = True
    return _expand_columns(mask, full)


def poisson_disc_mask(
    shape: Sequence[int],
    acceleration: float,
    calib: int | Sequence[int],
    *,
    generator: torch.Generator | None = None,
    tol: float = 0.05,
    max_iter: int = 40,
) -> Tensor:
    """Variable-density Poisson-disc mask over two phase-encode axes, with a fully sampled centre.

    Method (written from Bridson-style dart throwing, discretised to the k-space grid): visit the
    grid points once in a random order; keep a point unless an earlier kept point ``p`` lies
    closer than ``r(p) = 1 + slope * rho(p)`` grid units, where ``rho`` is the elliptical
    radius normalised to 1 at the middle of each edge (``rho = sqrt(((ky - ny//2) / (ny/2))^2 +
    ((kz - nz//2) / (nz/2))^2)``). Density therefore falls off like ``1 / (1 + slope rho)^2``
    (full sampling at the centre). The calibration block is always kept. ``slope`` is found
    by bisection (the visiting order is drawn once) until ``numel / #kept`` is within ``tol``
    (relative) of ``acceleration``.

    Args:
        shape: ``(ny, nz)`` (a 2D mask, e.g. the ``(ky, kz)`` plane of a 3D scan or a 2D slice)
            or ``(D, H, W)`` (a 3D mask: the pattern over ``(D, W)``, constant along the readout ``H``).
        acceleration: target acceleration ``>= 1`` (``1`` gives a full mask).
        calib: side of the fully sampled centre block, ``c`` or ``(c_y, c_z)`` (``0`` for none);
            it starts at ``(n - c + 1) // 2`` along each axis, as fastMRI centres its columns.
        generator: source of randomness (one permutation of the grid points).
        tol: relative tolerance on the achieved acceleration, in ``(0, 1)``.
        max_iter: bisection steps at most.

    Returns:
        ``torch.bool`` mask of ``shape``.

    Raises:
        ValueError: bad arguments; a calibration block holding more than ``numel / acceleration``
            samples; or no slope reaching ``acceleration`` within ``tol`` (grid too small).

    Examples:
        >>> m = poisson_disc_mask((32, 32), 4, 8, generator=torch.Generator().manual_seed(0))
        >>> bool(m[12:20, 12:20].all()), abs(mask_acceleration(m) - 4) <= 0.2
        (True, True)
    """
    who = "poisson_disc_mask"
    full = _check_shape(shape, who, (2, 3))
    acceleration = _check_acceleration(acceleration, who)
    plane = (full[0], full[-1]) if len(full) == 3 else full
    calib_pair = _check_calib(calib, plane, who)
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"{who}: tol must be a number in (0, 1), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{who}: max_iter must be an integer >= 1, got {max_iter!r}")
    ny, nz = plane
    numel = ny * nz
    n_calib = calib_pair[0] * calib_pair[1]
    if n_calib * acceleration > numel:
        raise ValueError(
            f"{who}: the calibration block {calib_pair[0]}x{calib_pair[1]} ({n_calib} samples) exceeds the budget "
            f"{ny}*{nz}/{acceleration} = {numel / acceleration:.1f} samples; use a smaller calib or acceleration"
        )
    order = torch.randperm(numel, generator=generator).numpy()
    if acceleration == 1:
        mask2d = np.ones(plane, dtype=bool)
    else:
        mask2d = _poisson_bisection(plane, acceleration, calib_pair, order, tol, max_iter, who)
    mask = torch.from_numpy(mask2d)
    if len(full) == 3:
        mask = mask[:, None, :].expand(full).contiguous()
    return mask


def mask_acceleration(mask: Tensor) -> float:
    """Achieved acceleration ``numel / #sampled`` of a mask (``inf`` for an empty mask).

    Examples:
        >>> mask_acceleration(torch.tensor([True, False, False, False]))
        4.0
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask_acceleration: mask must be a torch.Tensor, got {type(mask).__name__}")
    count = int((mask != 0).sum())
    return math.inf if count == 0 else mask.numel() / count


# ---- column-mask internals -------------------------------------------------------------------
def _centre_block(width: int, num_low: int) -> Tensor:
    mask = torch.zeros(width, dtype=torch.bool)
    start = (width - num_low + 1) // 2
    mask[start : start + num_low] = True
    return mask


def _random_columns(uniform: Tensor, acceleration: float, center_fraction: float) -> Tensor:
    """The random column pattern for given uniform draws ``(W,)`` (split out so tests can feed
    the draws of a reference implementation)."""
    width = uniform.numel()
    num_low = round(width * center_fraction)
    if num_low >= width:
        return torch.ones(width, dtype=torch.bool)
    prob = (width / acceleration - num_low) / (width - num_low)
    return (uniform < prob) | _centre_block(width, num_low)


def _expand_columns(columns: Tensor, shape: tuple[int, ...]) -> Tensor:
    return columns.expand(shape).contiguous()


# ---- Poisson-disc internals -----------------------------------------------------------------
def _poisson_bisection(
    plane: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int],
    order: np.ndarray,
    tol: float,
    max_iter: int,
    who: str,
) -> np.ndarray:
    ny, nz = plane
    numel = ny * nz
    iy, iz = np.meshgrid(np.arange(ny), np.arange(nz), indexing="ij")
    rho = np.sqrt(((iy - ny // 2) / (ny / 2)) ** 2 + ((iz - nz // 2) / (nz / 2)) ** 2)
    calib_mask = np.zeros(plane, dtype=bool)
    y0, z0 = (ny - calib[0] + 1) // 2, (nz - calib[1] + 1) // 2
    calib_mask[y0 : y0 + calib[0], z0 : z0 + calib[1]] = True
    footprints: dict[int, np.ndarray] = {}

    def achieved(slope: float) -> tuple[float, np.ndarray]:
        mask = _poisson_pass(rho, slope, calib_mask, order, footprints)
        return numel / int(mask.sum()), mask

    # Bracket: slope 0 keeps every point (acceleration 1); double the slope until it overshoots.
    lo, hi = 0.0, 1.0
    best_err, best_acc = math.inf, 1.0
    steps = 0
    while True:
        acc, mask = achieved(hi)
        steps += 1
        err = abs(acc - acceleration) / acceleration
        if err < best_err:
            best_err, best_acc = err, acc
        if err <= tol:
            return mask
        if acc > acceleration or hi > 8 * max(ny, nz) or steps >= max_iter:
            break
        lo, hi = hi, 2 * hi
    while steps < max_iter:
        mid = 0.5 * (lo + hi)
        acc, mask = achieved(mid)
        steps += 1
        err = abs(acc - acceleration) / acceleration
        if err < best_err:
            best_err, best_acc = err, acc
        if err <= tol:
            return mask
        if acc < acceleration:
            lo = mid
        else:
            hi = mid
    raise ValueError(
        f"{who}: could not reach acceleration {acceleration} within tol={tol} on a {ny}x{nz} grid with calib "
        f"{calib[0]}x{calib[1]} (closest {best_acc:.3f} after {steps} steps); "
        "use a larger grid, a larger tol or max_iter"
    )


def _poisson_pass(
    rho: np.ndarray, slope: float, calib_mask: np.ndarray, order: np.ndarray, footprints: dict[int, np.ndarray]
) -> np.ndarray:
    """One dart-throwing pass: a kept point blocks every grid point closer than its radius."""
    ny, nz = rho.shape
    # Radii quantised to 1/8 of a grid step so the disc footprints can be cached.
    radius_q = np.round((1.0 + slope * rho) * 8).astype(np.int64).ravel()
    blocked = calib_mask.copy()
    kept = calib_mask.copy()
    blocked_flat, kept_flat = blocked.ravel(), kept.ravel()
    for idx in order.tolist():
        if blocked_flat[idx]:
            continue
        kept_flat[idx] = True
        q = int(radius_q[idx])
        if q <= 8:  # radius <= 1: blocks only the point itself, which is never visited again
            continue
        fp = footprints.get(q)
        if fp is None:
            fp = footprints[q] = _disc(q / 8)
        h = fp.shape[0] // 2
        i, j = divmod(idx, nz)
        a0, a1, b0, b1 = max(i - h, 0), min(i + h + 1, ny), max(j - h, 0), min(j + h + 1, nz)
        blocked[a0:a1, b0:b1] |= fp[a0 - i + h : a1 - i + h, b0 - j + h : b1 - j + h]
    return kept


def _disc(radius: float) -> np.ndarray:
    """Offsets strictly closer than ``radius`` as a ``(2h+1, 2h+1)`` boolean footprint."""
    h = math.ceil(radius) - 1
    d = np.arange(-h, h + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2) < radius**2


# ---- validation -------------------------------------------------------------------------------
def _check_shape(shape: int | Sequence[int], who: str, ndims: tuple[int, ...]) -> tuple[int, ...]:
    full = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else shape
    try:
        full = tuple(full)  # type: ignore[arg-type]
    except TypeError:
        full = ()
    ok = len(full) in ndims and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in full)
    if not ok:
        sizes = " or ".join(", ".join(map(str, ndims)).rsplit(", ", 1))
        raise ValueError(f"{who}: shape must be {sizes} positive integers, got {shape!r}")
    return full  # type: ignore[return-value]


def _check_acceleration(acceleration: float, who: str) -> float:
    if (
        isinstance(acceleration, bool)
        or not isinstance(acceleration, (int, float))
        or not math.isfinite(acceleration)
        or acceleration < 1
    ):
        raise ValueError(f"{who}: acceleration must be a finite number >= 1, got {acceleration!r}")
    return float(acceleration)


def _check_center_fraction(center_fraction: float, who: str) -> float:
    if (
        isinstance(center_fraction, bool)
        or not isinstance(center_fraction, (int, float))
        or not 0 < center_fraction < 1
    ):
        raise ValueError(f"{who}: center_fraction must be a number in (0, 1), got {center_fraction!r}")
    return float(center_fraction)


def _check_calib(calib: int | Sequence[int], plane: tuple[int, int], who: str) -> tuple[int, int]:
    pair = (calib, calib) if isinstance(calib, int) and not isinstance(calib, bool) else calib
    try:
        pair = tuple(pair)  # type: ignore[arg-type]
    except TypeError:
        pair = ()
    ok = len(pair) == 2 and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= n for c, n in zip(pair, plane, strict=True)
    )
    if not ok:
        raise ValueError(f"{who}: calib must be an integer or a pair of integers in [0, {plane}], got {calib!r}")
    return pair  # type: ignore[return-value]
