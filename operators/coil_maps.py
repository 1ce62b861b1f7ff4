"""Coil sensitivity maps: simulated birdcage arrays and ESPIRiT estimates from calibration data.

Maps are complex tensors ``(coils, H, W)`` or ``(coils, D, H, W)`` on the image grid, in the
layout ``MulticoilMRI`` takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["birdcage_maps", "espirit_maps"]


def birdcage_maps(
    shape: Sequence[int],
    coils: int,
    *,
    radius: float = 1.5,
    rings: int = 1,
    normalize: bool = True,
    dtype: torch.dtype = torch.complex64,
) -> Tensor:
    """Simulated sensitivities of a birdcage-like array of wire elements around the object.

    Model (written from the Biot–Savart field of a long straight wire): image coordinates are
    normalised to ``[-1, 1)`` across each axis (``u = (j - W/2) / (W/2)`` along ``W``,
    ``v = (i - H/2) / (H/2)`` along ``H``). Element ``c`` of a ring sits at angle
    ``theta_c = 2 pi c / n`` on a circle of radius ``radius`` in the ``(v, u)`` plane; its
    receive sensitivity is ``exp(-i (alpha_c - theta_c)) / |d_c|`` with ``d_c`` the displacement
    from the element to the voxel and ``alpha_c`` the in-plane angle of ``d_c`` (the ``1/|d|``
    magnitude and the angle-following phase of a wire's circulating field; subtracting
    ``theta_c`` makes every element's phase agree at the centre). In 3D the elements run along
    ``D``: ``rings`` rings of ``coils / rings`` elements are spread over ``z`` in ``[-0.5, 0.5]``
    (odd rings rotated by half an element so the rings interleave) and ``|d_c|`` includes the
    ``z`` offset. In 2D the magnitudes equal ``sigpy.mri.birdcage_maps``'s; the phases are their
    conjugates up to a constant (``S * S_sigpy = i |S|^2``).

    Normalisation (``normalize=True``): the maps are divided by their root-sum-of-squares, so
    ``sum_c |S_c|^2 = 1`` at every grid point. Then ``S^H S = I`` and the coil-combined image of
    fully sampled data is the object itself, as with ESPIRiT maps inside the object.

    Args:
        shape: image shape ``(H, W)`` or ``(D, H, W)``.
        coils: number of elements, ``>= 1`` (a multiple of ``rings``).
        radius: ring radius in normalised units (the field of view is ``[-1, 1)``); ``> 1`` keeps
            the elements outside the inscribed circle.
        rings: 3D only: rings along ``D`` (``1`` for 2D).
        normalize: divide by the root-sum-of-squares (see above).
        dtype: complex dtype of the result.

    Returns:
        Complex tensor ``(coils, *shape)``.

    Raises:
        ValueError: bad ``shape``, ``coils``, ``radius`` or ``rings``; ``dtype`` not complex.

    Examples:
        >>> s = birdcage_maps((8, 8), 4)
        >>> s.shape, torch.allclose((s.abs() ** 2).sum(0), torch.ones(8, 8))
        (torch.Size([4, 8, 8]), True)
    """
    who = "birdcage_maps"
    if not (isinstance(shape, Sequence) and len(shape) in (2, 3)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape
    ):
        raise ValueError(f"{who}: shape must be (H, W) or (D, H, W) positive integers, got {shape!r}")
    if isinstance(coils, bool) or not isinstance(coils, int) or coils < 1:
        raise ValueError(f"{who}: coils must be an integer >= 1, got {coils!r}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 1):
        raise ValueError(f"{who}: radius must be a finite number > 1 (elements outside the object), got {radius!r}")
    if isinstance(rings, bool) or not isinstance(rings, int) or rings < 1 or coils % rings:
        raise ValueError(f"{who}: rings must be an integer >= 1 dividing coils={coils}, got {rings!r}")
    if len(shape) == 2 and rings != 1:
        raise ValueError(f"{who}: rings must be 1 for a 2D shape {tuple(shape)}, got {rings!r}")
    if not dtype.is_complex:
        raise ValueError(f"{who}: dtype must be complex, got {dtype}")

    real = torch.float64  # build in float64, cast at the end
    spatial = tuple(shape)
    h, w = spatial[-2], spatial[-1]
    v = ((torch.arange(h, dtype=real) - h / 2) / (h / 2)).view(h, 1)
    u = ((torch.arange(w, dtype=real) - w / 2) / (w / 2)).view(1, w)
    if len(spatial) == 3:
        d = spatial[0]
        z = ((torch.arange(d, dtype=real) - d / 2) / (d / 2)).view(d, 1, 1)
        ring_z = torch.linspace(-0.5, 0.5, rings, dtype=real) if rings > 1 else torch.zeros(1, dtype=real)
    else:
        z = torch.zeros((), dtype=real)
        ring_z = torch.zeros(1, dtype=real)
    per_ring = coils // rings
    maps = []
    for c in range(coils):
        ring, k = divmod(c, per_ring)
        # Successive rings are rotated by half an element so their elements interleave.
        theta = 2 * math.pi * (k + 0.5 * (ring % 2)) / per_ring
        dv, du, dz = v - radius * math.sin(theta), u - radius * math.cos(theta), z - ring_z[ring]
        # Half a pixel's normalised size as a floor: the field is singular only on the element itself.
        dist = torch.sqrt(du**2 + dv**2 + dz**2).clamp_min(1.0 / max(spatial))
        alpha = torch.atan2(dv, du)
        maps.append(torch.polar(1.0 / dist, -(alpha - theta)).expand(spatial))
    out = torch.stack(maps)
    if normalize:
        out = out / (out.abs() ** 2).sum(0, keepdim=True).sqrt()
    return out.to(dtype)


def espirit_maps(
    kspace: Tensor,
    calib_width: int = 24,
    *,
    thresh: float = 0.02,
    kernel_width: int = 6,
    crop: float = 0.95,
    max_iter: int = 100,
) -> Tensor:
    """ESPIRiT sensitivity maps from the fully sampled centre of multi-coil k-space (via sigpy).

    A thin wrapper over ``sigpy.mri.app.EspiritCalib`` (one set of maps): the calibration matrix
    of the central ``calib_width`` block is thresholded at ``thresh`` times its largest singular
    value, and the maps are the eigenvectors of eigenvalue ~1 of the resulting image-domain
    operator, found by power iteration. sigpy returns maps whose phase is referenced to coil 0
    (coil 0 real and non-negative) and zeroed where the eigenvalue is below ``crop``, i.e.
    outside the object. sigpy's FFTs are centred and orthonormal, as ``fftnc`` here.

    Args:
        kspace: complex k-space ``(coils, H, W)`` or ``(coils, D, H, W)``, zero frequency at
            ``n // 2``; only the central ``calib_width`` block along every axis is used.
        calib_width: side of the calibration block (``kernel_width < calib_width <= min(spatial)``).
        thresh: relative singular-value threshold of the calibration matrix, in ``(0, 1)``.
        kernel_width: ESPIRiT kernel side, ``>= 1``.
        crop: eigenvalue threshold below which maps are zeroed, in ``[0, 1]``.
        max_iter: power iterations, ``>= 1``.

    Returns:
        Complex maps of the shape, dtype and device of ``kspace``.

    Raises:
        ImportError: sigpy is not installed (``pip install invdiff[mri]``).
        TypeError: ``kspace`` is not a complex tensor.
        ValueError: bad shape, NaN/Inf in ``kspace``, or a bad parameter.

    References:
        Uecker et al., "ESPIRiT — an eigenvalue approach to autocalibrating parallel MRI",
        Magn. Reson. Med. 71:990–1001 (2014).
    """
    who = "espirit_maps"
    if not isinstance(kspace, Tensor) or not kspace.is_complex():
        got = kspace.dtype if isinstance(kspace, Tensor) else type(kspace).__name__
        raise TypeError(
            f"{who}: kspace must be a complex tensor (coils, H, W) or (coils, D, H, W), got {got}; "
            "real/imaginary pairs can be converted with torch.view_as_complex"
        )
    if kspace.ndim not in (3, 4):
        raise ValueError(f"{who}: kspace must have shape (coils, H, W) or (coils, D, H, W), got {tuple(kspace.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(kspace)).all()):
        raise ValueError(f"{who}: kspace contains NaN or Inf")
    smallest = min(kspace.shape[1:])
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, int) or kernel_width < 1:
        raise ValueError(f"{who}: kernel_width must be an integer >= 1, got {kernel_width!r}")
    if isinstance(calib_width, bool) or not isinstance(calib_width, int) or not kernel_width < calib_width <= smallest:
        raise ValueError(
            f"{who}: calib_width must be an integer in ({kernel_width}, {smallest}] (kernel_width < calib_width <= "
            f"smallest image side), got {calib_width!r}"
        )
    if not (isinstance(thresh, (int, float)) and 0 < thresh < 1):
        raise ValueError(f"{who}: thresh must be a number in (0, 1), got {thresh!r}")
    if not (isinstance(crop, (int, float)) and 0 <= crop <= 1):
        raise ValueError(f"{who}: crop must be a number in [0, 1], got {crop!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{who}: max_iter must be an integer >= 1, got {max_iter!r}")
    try:
        from sigpy.mri.app import EspiritCalib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{who} needs sigpy, an optional dependency: pip install invdiff[mri]  (or: pip install sigpy)"
        ) from err
    ksp = np.ascontiguousarray(kspace.detach().cpu().numpy())
    maps = EspiritCalib(
        ksp,
        calib_width=calib_width,
        thresh=thresh,
        kernel_width=kernel_width,
        crop=crop,
        max_iter=max_iter,
        show_pbar=False,
    ).run()
    return torch.from_numpy(np.asarray(maps)).to(device=kspace.device, dtype=kspace.dtype)
