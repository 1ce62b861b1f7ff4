"""Masking / inpainting: ``y = m ⊙ x`` with a binary mask, and mask generators.

Convention used everywhere in this module: a mask is a ``bool`` tensor that is ``True`` where a
pixel/voxel is **observed (kept)** and ``False`` where it is **missing**. The measurement ``y`` has
the full shape of ``x``, with zeros at the missing entries (not a packed vector of observed values),
so ``y`` can be displayed and fed to networks like an image.

SVD: ``U = V = I`` and the singular values are the mask itself (1 observed, 0 missing), so
``A^+ = A^T = A`` and ``pinv(y) = m ⊙ y``.

Mask generators (all return ``bool`` tensors, ``True`` = kept, on the generator's device):

- ``random_pixel_mask(shape, keep_fraction)``: every pixel/voxel kept independently with
  probability ``keep_fraction`` (2D, 3D or any shape).
- ``box_mask(shape, box_size, position=...)``: one missing rectangle / cuboid, centred, at a given
  corner or at a random position.
- ``half_mask(shape, side)``: one half of the image/volume missing.
- ``brush_stroke_mask(shape, ...)``: free-form strokes (random walks drawn with a round brush),
  in the spirit of the irregular masks of DeepFill v2 / Palette; 2D or 3D.

Randomness only comes from the ``generator=`` argument (``None`` falls back to torch's default
generator, as in ``torch.rand``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .base import DecomposableOperator

__all__ = [
    "Inpainting",
    "MaskOperator",
    "box_mask",
    "brush_stroke_mask",
    "half_mask",
    "random_pixel_mask",
    "validate_mask",
]


def validate_mask(mask: object, name: str = "mask") -> Tensor:
    """Check a user-supplied mask and return it as a ``bool`` tensor (``True`` = observed).

    Accepts ``bool`` tensors and real (integer or floating) tensors whose values are all 0 or 1.

    Args:
        mask: the mask, any shape.
        name: the argument name used in error messages.

    Returns:
        The mask as ``torch.bool``, same shape and device.

    Raises:
        TypeError: not a tensor, or complex.
        ValueError: empty, contains NaN/Inf, or holds values other than 0 and 1.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (bool, or 0/1 values), got {type(mask).__name__}; "
                        "use torch.from_numpy for arrays")
    if mask.is_complex():
        raise TypeError(f"{name} must be a bool or real 0/1 tensor, got dtype {mask.dtype}")
    if mask.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask.detach().clone()
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{name} contains NaN or Inf; a mask holds only 0 (missing) and 1 (observed)")
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be boolean or contain only 0 and 1, got value {mask[bad].flatten()[0].item()!r} "
            f"(dtype {mask.dtype}); threshold it first, e.g. mask > 0.5"
        )
    return mask.detach() == 1


class MaskOperator(DecomposableOperator):
    """``y = m ⊙ x`` for a binary mask ``m`` broadcastable to ``x_shape`` (1 observed, 0 missing).

    The general form behind ``Inpainting`` and the hyperspectral ``BandCompletion`` /
    ``PixelCompletion``: ``y`` has the shape of ``x`` with zeros where ``m`` is 0.
    SVD: ``U = V = I``, singular values ``m``; ``pinv(y) = m ⊙ y``.

    Args:
        mask: ``bool`` or 0/1 tensor, broadcastable to ``shape`` (e.g. ``(H, W)`` against ``(C, H, W)``).
        shape: ``x_shape`` without the batch dimension.

    Attributes:
        mask: float 0/1 buffer with the mask's own (broadcastable) shape; use ``observed`` for a
            ``bool`` tensor of the full ``x_shape``.

    Raises:
        ValueError: bad mask values, or a mask that does not broadcast to ``shape``.
    """

    def __init__(self, mask: Tensor, shape: Sequence[int]) -> None:
        super().__init__()
        mask = validate_mask(mask)
        shape = _check_positive_shape(shape, "shape")
        if mask.ndim > len(shape) or any(a not in (1, b) for a, b in zip(reversed(mask.shape), reversed(shape), strict=False)):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x_shape {shape}")
        self.x_shape = self.y_shape = shape
        # Stored as floats: the mask doubles as the singular values, which follow the module's dtype.
        self.register_buffer("mask", mask.to(torch.float32))

    @property
    def observed(self) -> Tensor:
        """``bool`` tensor of shape ``x_shape``: ``True`` where ``x`` is measured."""
        return (self.mask != 0).expand(self.x_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        return y * self.mask.to(y.dtype)

    def normal(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x.dtype)

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """``A^+ y = m ⊙ y`` (closed form; ``tol`` and ``max_iter`` are unused)."""
        self.check_y(y)
        return y * self.mask.to(y.dtype)

    def singular_values(self) -> Tensor:
        return self.mask.expand(self.x_shape)

    def v_adjoint(self, x: Tensor) -> Tensor:
        return x

    def v(self, z: Tensor) -> Tensor:
        return z

    def u_adjoint(self, y: Tensor) -> Tensor:
        # Zero where the singular value is zero, as the DecomposableOperator contract asks.
        return y * self.mask.to(y.dtype)

    def u(self, z: Tensor) -> Tensor:
        return z * self.mask.to(z.dtype)

    def extra_repr(self) -> str:
        kept = float(self.observed.float().mean())
        return f"x_shape={self.x_shape}, observed_fraction={kept:.3f}"


class Inpainting(MaskOperator):
    """Inpainting: ``y = m ⊙ x``, the same spatial mask for every channel (or one mask per channel).

    ``y`` has the full shape of ``x`` with zeros at the missing pixels/voxels.

    Args:
        mask: ``bool`` or 0/1 tensor, ``True``/1 = observed. With ``channels`` an int, a spatial mask
            ``(H, W)`` or ``(D, H, W)`` applied to every channel; with ``channels=None``, a mask of the
            full ``x_shape`` ``(C, H, W)`` or ``(C, D, H, W)`` (one mask per channel).
        channels: number of image channels ``C`` (>= 1), or ``None`` (see ``mask``).

    Shapes:
        x, y: ``(B, C, H, W)`` or ``(B, C, D, H, W)``, real.

    Raises:
        TypeError: the mask is not a tensor or is complex.
        ValueError: the mask has the wrong rank, NaN/Inf or values other than 0/1; ``channels`` < 1.

    Examples:
        >>> op = Inpainting(torch.tensor([[True, False], [False, True]]), channels=3)
        >>> op(torch.ones(1, 3, 2, 2))[0, 0]
        tensor([[1., 0.],
                [0., 1.]])
    """

    def __init__(self, mask: Tensor, channels: int | None = 1) -> None:
        checked = validate_mask(mask)
        if channels is None:
            if checked.ndim not in (3, 4):
                raise ValueError(
                    f"with channels=None the mask must have the full x shape (C, H, W) or (C, D, H, W), "
                    f"got shape {tuple(checked.shape)}"
                )
            shape = tuple(checked.shape)
        else:
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise ValueError(f"channels must be an integer >= 1 or None, got {channels!r}")
            if checked.ndim not in (2, 3):
                raise ValueError(
                    f"mask must be spatial, (H, W) or (D, H, W), when channels is given; got shape "
                    f"{tuple(checked.shape)} (pass channels=None for a per-channel mask)"
                )
            shape = (channels, *checked.shape)
        super().__init__(checked, shape)


# ---- mask generators ---------------------------------------------------------------------------
def random_pixel_mask(
    shape: Sequence[int], keep_fraction: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """Each pixel/voxel kept (``True``) independently with probability ``keep_fraction``.

    The number kept is Binomial(N, keep_fraction), so the kept fraction is ``keep_fraction`` within
    a few ``sqrt(p (1 - p) / N)``. ``keep_fraction = 0.3`` means 30 % observed, 70 % missing.

    Args:
        shape: mask shape, e.g. ``(H, W)`` or ``(D, H, W)`` (random voxels).
        keep_fraction: probability in ``[0, 1]`` that an entry is observed.
        generator: source of randomness.

    Returns:
        ``bool`` tensor of ``shape``, ``True`` = observed.

    Raises:
        ValueError: bad shape, or ``keep_fraction`` not a number in ``[0, 1]``.
    """
    shape = _check_positive_shape(shape, "shape")
    keep_fraction = _check_fraction(keep_fraction, "keep_fraction")
    return torch.rand(shape, generator=generator, device=_device_of(generator)) < keep_fraction


def box_mask(
    shape: Sequence[int],
    box_size: int | Sequence[int],
    *,
    position: Literal["center", "random"] | Sequence[int] = "center",
    generator: torch.Generator | None = None,
) -> Tensor:
    """One missing box (rectangle in 2D, cuboid in 3D); ``True`` (observed) everywhere else.

    Args:
        shape: ``(H, W)`` or ``(D, H, W)``.
        box_size: edge length of the box, one int for every axis or one per axis; each in ``[1, n]``.
        position: ``"center"`` (the box centred, rounded down), ``"random"`` (corner uniform over all
            positions where the box fits, drawn from ``generator``), or the box's first corner
            ``(row, col)`` / ``(slice, row, col)``.
        generator: source of randomness for ``position="random"``.

    Returns:
        ``bool`` tensor of ``shape``.

    Raises:
        ValueError: bad shape rank, a box larger than the image, or a corner that puts it outside.
    """
    shape = _check_spatial_shape(shape)
    size = _per_axis(box_size, len(shape), "box_size")
    for s, n in zip(size, shape, strict=True):
        if s > n:
            raise ValueError(f"box_size {size} does not fit in shape {shape}")
    if isinstance(position, str):
        if position == "center":
            corner = tuple((n - s) // 2 for n, s in zip(shape, size, strict=True))
        elif position == "random":
            device = _device_of(generator)
            corner = tuple(
                int(torch.randint(0, n - s + 1, (), generator=generator, device=device)) for n, s in zip(shape, size, strict=True)
            )
        else:
            raise ValueError(f"position must be 'center', 'random' or a corner index tuple, got {position!r}")
    else:
        corner = _per_axis(position, len(shape), "position", minimum=0)
        if any(c + s > n for c, s, n in zip(corner, size, shape, strict=True)):
            raise ValueError(f"box at corner {corner} with size {size} extends outside shape {shape}")
    mask = torch.ones(shape, dtype=torch.bool, device=_device_of(generator))
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))] = False
    return mask


_SIDES: dict[str, tuple[int, bool]] = {  # side -> (axis counted from the end, missing part is the first half)
    "left": (-1, True),
    "right": (-1, False),
    "top": (-2, True),
    "bottom": (-2, False),
    "front": (-3, True),
    "back": (-3, False),
}


def half_mask(
    shape: Sequence[int], side: Literal["left", "right", "top", "bottom", "front", "back"]
) -> Tensor:
    """Half of the image missing: ``side`` names the **missing** half; the rest is ``True``.

    Axes: ``left``/``right`` split the last axis (W), ``top``/``bottom`` split H, ``front``/``back``
    split D (3D only). For an odd length ``n`` the missing part has ``n // 2`` entries.

    Args:
        shape: ``(H, W)`` or ``(D, H, W)``.
        side: which half is missing.

    Returns:
        ``bool`` tensor of ``shape``.

    Raises:
        ValueError: bad shape rank, an unknown side, or ``front``/``back`` on a 2D shape.
    """
    shape = _check_spatial_shape(shape)
    if side not in _SIDES:
        raise ValueError(f"side must be one of {sorted(_SIDES)}, got {side!r}")
    axis, first = _SIDES[side]
    if -axis > len(shape):
        raise ValueError(f"side {side!r} needs a 3D shape (D, H, W), got {shape}")
    n = shape[axis]
    idx = torch.arange(n)
    missing = idx < n // 2 if first else idx >= n - n // 2
    view = [1] * len(shape)
    view[axis] = n
    return (~missing).view(view).expand(shape).clone()


def brush_stroke_mask(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    strokes: tuple[int, int] = (1, 4),
    vertices: tuple[int, int] = (4, 10),
    width: tuple[float, float] = (0.05, 0.12),
    length: tuple[float, float] = (0.05, 0.2),
    turn: float = 0.8,
) -> Tensor:
    """Free-form brush strokes (irregular holes): missing (``False``) under the strokes.

    Each stroke is a random walk of straight segments drawn with a round brush (a capsule of
    radius ``width / 2`` around every segment), like the free-form masks of DeepFill v2 and Palette.
    The walk starts at a uniform random point; each new direction is the previous one plus
    ``turn`` times a standard Gaussian vector, renormalised; vertices are clamped to the image.
    2D gives strokes in the plane, 3D gives tubes in the volume.

    Args:
        shape: ``(H, W)`` or ``(D, H, W)``.
        generator: source of randomness.
        strokes: inclusive range of the number of strokes.
        vertices: inclusive range of segments per stroke.
        width: range of brush diameter, as a fraction of the smallest side (at least 1 pixel).
        length: range of segment length, as a fraction of the smallest side.
        turn: how sharply the walk may turn (0 = straight lines).

    Returns:
        ``bool`` tensor of ``shape``, ``True`` = observed.

    Raises:
        ValueError: bad shape rank or a malformed range.
    """
    shape = _check_spatial_shape(shape)
    strokes = _check_int_range(strokes, "strokes")
    vertices = _check_int_range(vertices, "vertices")
    width = _check_float_range(width, "width")
    length = _check_float_range(length, "length")
    if not (math.isfinite(turn) and turn >= 0):
        raise ValueError(f"turn must be a finite number >= 0, got {turn!r}")
    device = _device_of(generator)
    ndim, side = len(shape), float(min(shape))
    upper = torch.tensor([n - 1 for n in shape], dtype=torch.float64, device=device)
    grid = torch.stack(
        torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=device) for n in shape], indexing="ij"), dim=-1
    ).reshape(-1, ndim)
    hole = torch.zeros(grid.shape[0], dtype=torch.bool, device=device)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator, device=device, dtype=torch.float64))

    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=generator, device=device))

    for _ in range(randint(*strokes)):
        radius = max(0.5, 0.5 * uniform(*width) * side)
        point = torch.rand(ndim, generator=generator, device=device, dtype=torch.float64) * upper
        direction = _unit(torch.randn(ndim, generator=generator, device=device, dtype=torch.float64))
        for _ in range(randint(*vertices)):
            step = uniform(*length) * side
            turn_vec = torch.randn(ndim, generator=generator, device=device, dtype=torch.float64)
            direction = _unit(direction + turn * turn_vec)
            nxt = torch.minimum(torch.maximum(point + step * direction, torch.zeros_like(point)), upper)
            hole |= _segment_distance(grid, point, nxt) <= radius
            point = nxt
    return ~hole.reshape(shape)


# ---- helpers -------------------------------------------------------------------------------------
def _segment_distance(points: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance from each row of ``points`` (N, d) to the segment ``[a, b]``."""
    d = b - a
    dd = float(d @ d)
    t = ((points - a) @ d / dd).clamp(0.0, 1.0) if dd > 0 else torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    return (points - a - t[:, None] * d).norm(dim=1)


def _unit(v: Tensor) -> Tensor:
    n = v.norm()
    if float(n) == 0.0:
        v = torch.ones_like(v)
        n = v.norm()
    return v / n


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_positive_shape(shape: object, name: str) -> tuple[int, ...]:
    if isinstance(shape, Tensor) or not isinstance(shape, Sequence) or len(shape) == 0 or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape
    ):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape!r}")
    return tuple(int(n) for n in shape)


def _check_spatial_shape(shape: object) -> tuple[int, ...]:
    out = _check_positive_shape(shape, "shape")
    if len(out) not in (2, 3):
        raise ValueError(f"shape must be 2D (H, W) or 3D (D, H, W), got {out}")
    return out


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _per_axis(value: object, ndim: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        isinstance(values, Tensor)
        or not isinstance(values, Sequence)
        or len(values) != ndim
        or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values)
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a sequence of {ndim} such ints, got {value!r}")
    return tuple(int(v) for v in values)


def _check_int_range(value: object, name: str) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        or not 1 <= value[0] <= value[1]
    ):
        raise ValueError(f"{name} must be a pair (low, high) of ints with 1 <= low <= high, got {value!r}")
    return int(value[0]), int(value[1])


def _check_float_range(value: object, name: str) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ValueError(f"{name} must be a pair (low, high) of finite numbers with 0 <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])
