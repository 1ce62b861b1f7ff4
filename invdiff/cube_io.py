"""Hyperspectral cube files in and out: NPY, MATLAB ``.mat``, TIFF and (with the ``spectral`` package) ENVI.

In memory a cube is ``(bands, H, W)``. On disk each format keeps its users' convention:

| format | suffix | on disk | notes |
|---|---|---|---|
| NumPy | ``.npy`` | ``(bands, H, W)`` (``layout="chw"``) | ``layout="hwc"`` for ``(H, W, bands)`` files |
| MATLAB | ``.mat`` | ``(H, W, bands)`` as MATLAB users store cubes | one variable (``variable=``); v7.3 (HDF5) read via h5py |
| TIFF | ``.tif``, ``.tiff`` | one page per band, ``(bands, H, W)`` | via tifffile (ships with scikit-image) |
| ENVI | ``.hdr`` (+ ``.img``) | ``(lines, samples, bands)`` | needs ``spectral`` (extra ``hsi``) |

Loading returns a ``torch.Tensor`` with the file's floating dtype (integer data become float32, unscaled).
Layout check: a cube must have ``bands <= min(H, W)`` (e.g. 31 bands of 128 x 128 pixels); a ``(128, 128, 31)`` array
fails with a hint to pass ``layout="hwc"``; ``check_layout=False`` turns the check off for cubes with more
bands than rows. Writes are atomic (a temporary file in the same folder, then ``os.replace``) and an existing
file is never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_cube", "save_cube"]

Layout = Literal["chw", "hwc"]
_SUFFIXES = (".npy", ".mat", ".tif", ".tiff", ".hdr")


def load_cube(
    path: str | os.PathLike[str],
    *,
    layout: Layout | None = None,
    variable: str | None = None,
    check_layout: bool = True,
) -> Tensor:
    """Read a hyperspectral cube as a ``(bands, H, W)`` tensor.

    Args:
        path: ``.npy``, ``.mat``, ``.tif``/``.tiff`` or ENVI ``.hdr`` file.
        layout: axis order on disk, ``"chw"`` (bands, H, W) or ``"hwc"`` (H, W, bands); default: the format's
            convention (NPY and TIFF ``"chw"``, MAT and ENVI ``"hwc"``).
        variable: the MATLAB variable to read; may be omitted when the file holds exactly one array.
        check_layout: require ``bands <= min(H, W)`` after reordering (catches transposed cubes).

    Returns:
        ``(bands, H, W)`` tensor (float dtype of the file; integers as float32).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown suffix or layout, not a 3-D array, ``bands > min(H, W)`` (see ``check_layout``), missing or
            ambiguous MATLAB variable.
        ModuleNotFoundError: ENVI without the ``spectral`` package.
    """
    path = pathlib.Path(path)
    suffix = _suffix(path)
    _check_layout_arg(layout)
    if not path.is_file():
        raise FileNotFoundError(f"cube file {str(path)!r} does not exist")
    if suffix == ".npy":
        array, default = np.load(path, allow_pickle=False), "chw"
    elif suffix == ".mat":
        array, default = _load_mat(path, variable), "hwc"
    elif suffix in (".tif", ".tiff"):
        import tifffile

        array, default = tifffile.imread(path), "chw"
    else:
        array, default = _load_envi(path), "hwc"
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"cube file {path.name!r} holds an array of shape {array.shape}; expected a 3-D cube")
    if (layout or default) == "hwc":
        array = np.moveaxis(array, -1, 0)
    if check_layout:
        _check_cube_shape(array.shape, layout or default)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"cube file {path.name!r} holds dtype {array.dtype}; expected real numbers")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array))


def save_cube(
    cube: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    layout: Layout | None = None,
    variable: str = "cube",
    check_layout: bool = True,
) -> pathlib.Path:
    """Write a ``(bands, H, W)`` cube atomically; returns the path written.

    Args:
        cube: ``(bands, H, W)`` real tensor or array (a leading batch axis of size 1 is not accepted: index it).
        path: target file; the suffix picks the format (``.npy``, ``.mat``, ``.tif``/``.tiff``, ``.hdr``).
        overwrite: replace an existing file (otherwise ``FileExistsError``).
        layout: axis order on disk (default: the format's convention, see ``load_cube``).
        variable: MATLAB variable name.
        check_layout: require ``bands <= min(H, W)``.

    Raises:
        FileExistsError: the file (or, for ENVI, its data file) exists and ``overwrite`` is False.
        TypeError: ``cube`` is not a real tensor/array.
        ValueError: not 3-D, ``bands > min(H, W)``, unknown suffix, bad variable name.
    """
    path = pathlib.Path(path)
    suffix = _suffix(path)
    _check_layout_arg(layout)
    if isinstance(cube, Tensor):
        if cube.is_complex():
            raise TypeError(f"cube must be real, got dtype {cube.dtype}")
        array = cube.detach().cpu().numpy()
    elif isinstance(cube, np.ndarray):
        array = cube
    else:
        raise TypeError(f"cube must be a torch.Tensor or numpy.ndarray, got {type(cube).__name__}")
    if np.iscomplexobj(array):
        raise TypeError(f"cube must be real, got dtype {array.dtype}")
    if array.ndim != 3:
        raise ValueError(f"cube must be (bands, H, W), got shape {tuple(array.shape)}")
    if check_layout:
        _check_cube_shape(array.shape, None)
    targets = [path] + ([path.with_suffix(".img")] if suffix == ".hdr" else [])
    if not overwrite:
        for target in targets:
            if target.exists():
                raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt_default = "hwc" if suffix in (".mat", ".hdr") else "chw"
    disk = np.moveaxis(array, 0, -1) if (layout or fmt_default) == "hwc" else array
    disk = np.ascontiguousarray(disk)
    if suffix == ".npy":
        _atomic(path, lambda tmp: np.save(tmp, disk, allow_pickle=False))
    elif suffix == ".mat":
        if not variable.isidentifier() or variable.startswith("_"):
            raise ValueError(f"variable must be a MATLAB identifier (letters, digits, _; not starting with _), got {variable!r}")
        from scipy.io import savemat

        _atomic(path, lambda tmp: savemat(tmp, {variable: disk}, do_compression=True))
    elif suffix in (".tif", ".tiff"):
        import tifffile

        _atomic(path, lambda tmp: tifffile.imwrite(tmp, disk, photometric="minisblack"))
    else:
        _save_envi(disk, path)
    return path


# ---- formats ------------------------------------------------------------------------------------------
def _load_mat(path: pathlib.Path, variable: str | None) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3 files are HDF5; h5py sees MATLAB's column-major axes reversed
        import h5py

        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if not k.startswith("#")]
            name = _pick_variable(names, variable, path)
            return np.asarray(f[name]).T
    name = _pick_variable([k for k, v in data.items() if isinstance(v, np.ndarray) and v.dtype != object], variable, path)
    return data[name]


def _pick_variable(names: list[str], variable: str | None, path: pathlib.Path) -> str:
    if variable is not None:
        if variable not in names:
            raise ValueError(f"variable {variable!r} not in {path.name!r}; it holds: {', '.join(sorted(names)) or 'no arrays'}")
        return variable
    if len(names) != 1:
        raise ValueError(f"{path.name!r} holds {len(names)} arrays ({', '.join(sorted(names))}); pass variable= to choose one")
    return names[0]


def _envi() -> object:
    if importlib.util.find_spec("spectral") is None:
        raise ModuleNotFoundError("ENVI files need the 'spectral' package; install the extra: pip install 'invdiff[hsi]'")
    import spectral.io.envi as envi

    return envi


def _load_envi(path: pathlib.Path) -> np.ndarray:
    envi = _envi()
    return np.asarray(envi.open(str(path)).load())  # type: ignore[attr-defined]


def _save_envi(disk: np.ndarray, path: pathlib.Path) -> None:
    envi = _envi()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp_cube_") as tmp:
        tmp_hdr = pathlib.Path(tmp) / path.name
        envi.save_image(str(tmp_hdr), disk, ext=".img", force=True)  # type: ignore[attr-defined]
        # Data first, header last: a header only appears once its data file is complete.
        os.replace(tmp_hdr.with_suffix(".img"), path.with_suffix(".img"))
        os.replace(tmp_hdr, path)


def _atomic(path: pathlib.Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- checks -------------------------------------------------------------------------------------------
def _suffix(path: pathlib.Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"unsupported cube file suffix {path.suffix!r} in {str(path)!r}; use one of {', '.join(_SUFFIXES)}")
    return suffix


def _check_layout_arg(layout: object) -> None:
    if layout not in (None, "chw", "hwc"):
        raise ValueError(f"layout must be 'chw' (bands, H, W), 'hwc' (H, W, bands) or None, got {layout!r}")


def _check_cube_shape(shape: tuple[int, ...], layout: str | None) -> None:
    """``layout`` is the on-disk layout used when loading, ``None`` when saving an in-memory cube."""
    bands, h, w = shape
    if bands > min(h, w):
        if layout is None:
            hint = "pass a (bands, H, W) cube, e.g. cube.permute(2, 0, 1) for an (H, W, bands) tensor"
        else:
            hint = f"did you mean layout={'hwc' if layout == 'chw' else 'chw'!r}?"
        raise ValueError(
            f"cube must be (bands, H, W) with bands <= H and W; got {tuple(shape)}: {hint} "
            "(check_layout=False allows cubes with more bands than pixels per side)"
        )
