"""Image-quality metrics shared by the CLI, the benchmarks and the hyperspectral tools.

Definitions follow fastMRI's ``evaluate.py`` for MRI (PSNR and SSIM with ``data_range`` = the
target's maximum, SSIM from scikit-image with its default 7x7 uniform window; NMSE = ||x - x̂||² / ||x||²)
and the usual hyperspectral definitions (Wald's ERGAS; SAM in degrees, averaged over pixels;
MPSNR/MSSIM = band-wise PSNR/SSIM averaged over bands). Inputs are NumPy arrays or tensors; all
maths is float64. A result is a Python float.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

__all__ = ["ergas", "mpsnr", "mssim", "nmse", "psnr", "sam", "ssim"]


def _np(a: np.ndarray | Tensor, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if np.iscomplexobj(a):
        raise TypeError(f"{name} is complex; pass magnitudes (abs) for image metrics")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a.astype(np.float64)


def _pair(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    x, y = _np(target, "target"), _np(estimate, "estimate")
    if x.shape != y.shape:
        raise ValueError(f"estimate has shape {y.shape}; expected the target's shape {x.shape}")
    return x, y


def _data_range(x: np.ndarray, data_range: float | None) -> float:
    value = float(x.max()) if data_range is None else float(data_range)
    if not value > 0:
        raise ValueError(f"data_range must be > 0, got {value} (pass data_range= for non-positive targets)")
    return value


def nmse(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor) -> float:
    """Normalised MSE ``||x - x̂||² / ||x||²``."""
    x, y = _pair(target, estimate)
    return float(np.sum((x - y) ** 2) / np.sum(x**2))


def psnr(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor, *, data_range: float | None = None) -> float:
    """PSNR in dB with ``data_range`` = the target's maximum unless given (fastMRI convention)."""
    x, y = _pair(target, estimate)
    mse = float(np.mean((x - y) ** 2))
    peak = _data_range(x, data_range)
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def ssim(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor, *, data_range: float | None = None) -> float:
    """SSIM of 2D images, or the mean over the leading axis of a stack of 2D slices (fastMRI).

    scikit-image's default (7x7 uniform window, sample covariance) with ``data_range`` = the
    target's (volume) maximum unless given.
    """
    from skimage.metrics import structural_similarity

    x, y = _pair(target, estimate)
    peak = _data_range(x, data_range)
    if x.ndim == 2:
        return float(structural_similarity(x, y, data_range=peak))
    if x.ndim < 2:
        raise ValueError(f"ssim needs 2D images or stacks of them, got shape {x.shape}")
    x2, y2 = x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])
    return float(np.mean([structural_similarity(a, b, data_range=peak) for a, b in zip(x2, y2, strict=True)]))


def _cube_pair(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(target, estimate)
    if x.ndim != 3:
        raise ValueError(f"hyperspectral metrics need a cube (bands, H, W), got shape {x.shape}")
    return x, y


def mpsnr(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor, *, data_range: float | None = None) -> float:
    """Mean over bands of the band-wise PSNR of a cube (bands, H, W); ``data_range`` defaults to
    the cube's maximum (1 for reflectance cubes in [0, 1])."""
    x, y = _cube_pair(target, estimate)
    peak = _data_range(x, data_range)
    return float(np.mean([psnr(a, b, data_range=peak) for a, b in zip(x, y, strict=True)]))


def mssim(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor, *, data_range: float | None = None) -> float:
    """Mean over bands of the band-wise SSIM of a cube (bands, H, W)."""
    x, y = _cube_pair(target, estimate)
    return ssim(x, y, data_range=_data_range(x, data_range))


def sam(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor) -> float:
    """Spectral angle mapper in degrees, averaged over pixels of a cube (bands, H, W)."""
    x, y = _cube_pair(target, estimate)
    a, b = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    dot = np.sum(a * b, axis=0)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    valid = norms > 0
    cos = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cos))))


def ergas(target: np.ndarray | Tensor, estimate: np.ndarray | Tensor, *, scale: float = 1.0) -> float:
    """ERGAS (Wald 2002): ``100 / scale * sqrt(mean_b (RMSE_b / mean_b)²)``; ``scale`` is the
    resolution ratio of super-resolution (1 for denoising and completion)."""
    x, y = _cube_pair(target, estimate)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rmse = np.sqrt(np.mean((x - y) ** 2, axis=(1, 2)))
    means = np.mean(x, axis=(1, 2))
    if np.any(means == 0):
        raise ValueError("ERGAS is undefined for a band with zero mean")
    return float(100.0 / scale * np.sqrt(np.mean((rmse / means) ** 2)))
