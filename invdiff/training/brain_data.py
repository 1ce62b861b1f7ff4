"""Real brain MRI that ships inside pip wheels: the shipped prior's training and held-out slices.

Training data (``"mni152-t1"``): the nilearn MNI ICBM152 2009a symmetric T1 template
(197 x 233 x 189, 1 mm, brain-masked), sliced along all three axes.
Held-out evaluation data (never used for training; different subjects):

- ``dipy_t1_coronal``: dipy's ``data/files/t1_coronal_slice.npy`` (256 x 256, skull-stripped T1), BSD licence;
- ``nibabel_anatomical_axNN``: axial slices of nibabel's ``tests/data/anatomical.nii`` (33 x 41 x 25, 2 mm T1),
  MIT licence.

Files are located by path through ``importlib.util.find_spec`` of the top-level package, which does not execute
the package (importing nilearn pulls in scikit-learn and pandas; see research/DATA.md section 3).

One preprocessing for everything (:func:`preprocess_slice`): zero-pad to a square, resample to ``size`` x ``size``
(area averaging when shrinking, bilinear when enlarging), divide by the 99.5th percentile of the foreground
(pixels above 5 % of the maximum) and clip to [0, 1]. The prior's normalisation then maps [0, 1] to [-1, 1].
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "MNI_T1",
    "heldout_slices",
    "locate_package_file",
    "mni_training_slices",
    "preprocess_slice",
    "slice_volume",
    "write_heldout",
]

MNI_T1 = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
DIPY_T1_SLICE = "data/files/t1_coronal_slice.npy"
NIBABEL_ANATOMICAL = "tests/data/anatomical.nii"
FOREGROUND_FRACTION = 0.05  # a pixel is foreground when above this fraction of the maximum
PERCENTILE = 99.5
# axial slices of nibabel's anatomical.nii (axis 2 has 25 slices) that show a large brain cross-section
NIBABEL_AXIAL_SLICES = (10, 13, 16)


def locate_package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package.

    Args:
        package: top-level package name, e.g. ``"nilearn"``.
        relative: path inside the package folder.

    Raises:
        FileNotFoundError: the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it provides {relative!r}: pip install 'invdiff[data]'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{package} is installed but {relative!r} is missing (looked at {path})")
    return path


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) square -> (size, size): area averaging when shrinking (no aliasing), bilinear when enlarging."""
    x = img[None, None]
    if img.shape[-1] >= size:
        out = F.interpolate(x, size=(size, size), mode="area")
    else:
        out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out[0, 0]


def pad_square(img: torch.Tensor) -> torch.Tensor:
    """Zero-pad a (H, W) image symmetrically to a square (the extra pixel of an odd pad goes last)."""
    h, w = img.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    return F.pad(img, (left, n - w - left, top, n - h - top))


def foreground_fraction(img: np.ndarray | torch.Tensor, reference_max: float | None = None) -> float:
    """Fraction of pixels above ``FOREGROUND_FRACTION`` of ``reference_max`` (the image's own max by default)."""
    x = np.asarray(img)
    top = float(x.max()) if reference_max is None else reference_max
    if top <= 0:
        return 0.0
    return float(np.mean(x > FOREGROUND_FRACTION * top))


def percentile_scale(img: torch.Tensor, percentile: float = PERCENTILE) -> torch.Tensor:
    """Divide by the ``percentile`` of the foreground pixels and clip to [0, 1]; an all-zero image stays zero."""
    top = float(img.max())
    if top <= 0:
        return torch.zeros_like(img)
    fg = img[img > FOREGROUND_FRACTION * top]
    ref = float(torch.quantile(fg.double(), percentile / 100.0))
    return (img / ref).clamp(0.0, 1.0)


def preprocess_slice(img: np.ndarray | torch.Tensor, size: int, percentile: float = PERCENTILE) -> np.ndarray:
    """Pad square, resample to ``size``², scale by the foreground ``percentile`` (99.5th), clip to [0, 1].

    Args:
        img: (H, W) real image, any non-negative intensity unit.
        size: output side length.
        percentile: the foreground percentile that maps to 1.

    Returns:
        (size, size) float32 array in [0, 1].
    """
    x = torch.as_tensor(np.ascontiguousarray(img, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"img must be a 2D (H, W) array, got shape {tuple(x.shape)}")
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    x = x.clamp(min=0)
    x = _resize(pad_square(x), size)
    return percentile_scale(x, percentile).numpy().astype(np.float32)


def slice_volume(
    volume: np.ndarray, axes: Sequence[int], min_foreground: float
) -> list[tuple[int, int, np.ndarray]]:
    """All 2D slices of a 3D volume along ``axes`` with at least ``min_foreground`` foreground.

    Foreground is measured against the volume maximum, so slices grazing the edge of the anatomy are dropped.

    Returns:
        ``(axis, index, slice)`` triples, slice shape the volume shape without ``axis``.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {vol.shape}")
    top = float(vol.max())
    out = []
    for axis in axes:
        if axis not in (0, 1, 2):
            raise ValueError(f"slice axes must be in (0, 1, 2), got {axis!r}")
        for i in range(vol.shape[axis]):
            sl = np.take(vol, i, axis=axis)
            if foreground_fraction(sl, top) >= min_foreground:
                out.append((axis, i, sl))
    return out


def mni_training_slices(size: int = 64, axes: Sequence[int] = (0, 1, 2), min_foreground: float = 0.08) -> np.ndarray:
    """The shipped prior's training set: MNI ICBM152 T1 slices, preprocessed.

    Each slice is displayed radiologically (superior or anterior up).

    Returns:
        (N, 1, size, size) float32 in [0, 1] (N = 424 for the defaults, slice order: axis, then index).
    """
    import nibabel as nib

    vol = np.asarray(nib.load(str(locate_package_file("nilearn", MNI_T1))).dataobj, dtype=np.float32)
    slices = slice_volume(vol, axes, min_foreground)
    # RAS volume: transposing and flipping each slice puts superior (or anterior, for axial slices) up, the
    # display orientation of the held-out slices
    return np.stack([preprocess_slice(np.flipud(sl.T), size) for _, _, sl in slices])[:, None]


def heldout_slices(size: int = 64) -> dict[str, np.ndarray]:
    """Held-out evaluation slices (different subjects from the training template), preprocessed.

    Orientation: the dipy slice is used as stored; nibabel axial slices are transposed and flipped so the
    anterior side is up (radiological display).

    Returns:
        name -> (size, size) float32 in [0, 1].
    """
    import nibabel as nib

    out = {"dipy_t1_coronal": preprocess_slice(np.load(locate_package_file("dipy", DIPY_T1_SLICE)), size)}
    anat = np.asarray(nib.load(str(locate_package_file("nibabel", NIBABEL_ANATOMICAL))).dataobj, dtype=np.float32)
    for k in NIBABEL_AXIAL_SLICES:
        out[f"nibabel_anatomical_ax{k:02d}"] = preprocess_slice(np.flipud(anat[:, :, k].T), size)
    return out


def write_heldout(folder: str | Path, sizes: Sequence[int] = (64, 128)) -> list[Path]:
    """Write the held-out slices as ``<name>_<size>.npy`` files into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for size in sizes:
        for name, img in heldout_slices(size).items():
            path = folder / f"{name}_{size}.npy"
            np.save(path, img)
            paths.append(path)
    return paths
