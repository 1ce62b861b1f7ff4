"""MRI k-space in and out: fastMRI-style HDF5, NPY and NIfTI, with an optional sampling mask.

Canonical in memory (:class:`KSpace`): ``kspace`` complex64 ``(S, C, H, W)`` (slices, coils, rows = phase
encodes, columns = readout in fastMRI files); single-coil data has ``C = 1`` and ``multicoil = False``. Slices act as
the batch of ``invdiff.operators`` (``(B, coils, H, W)``). ``mask`` is bool ``(S, H, W)`` (``True`` = sampled).

File layouts read:

* **HDF5 (fastMRI)**: dataset ``kspace`` ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil, complex64;
  optional ``mask`` (``(W,)`` column mask as in the fastMRI test sets, or anything broadcastable to ``(S, H, W)``);
  optional ``reconstruction_rss`` / ``reconstruction_esc`` ``(S, h, w)``; optional ``ismrmrd_header`` (XML); file
  attributes such as ``max``, ``norm``, ``acquisition``, ``patient_id``.
* **NPY**: complex array, or real with a last axis of 2 holding (real, imaginary). ``(H, W)`` is one slice;
  ``(S, H, W)`` single-coil slices (fastMRI convention) unless ``multicoil=True`` reads it as ``(C, H, W)`` of one
  slice; ``(S, C, H, W)`` multi-coil.
* **NIfTI**: complex datatype, or real with a last axis of 2 holding (real, imaginary). As nibabel returns it, the
  array is ``(W, H)``, ``(W, H, S)`` or ``(W, H, S, C)`` (spatial axes reversed, as for images in
  ``invdiff.pipelines.io``; coils in the 4th, "volume", dimension). The affine is ignored.
* **Masks** (``mask_path``): ``.npy`` in canonical orientation (``(W,)``, ``(H, W)`` or ``(S, H, W)``) or NIfTI in
  reversed orientation (``(W,)``, ``(W, H)``, ``(W, H, S)``); binary values; broadcast to ``(S, H, W)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .atomic import atomic_path, check_writable, refuse_inputs

__all__ = ["KSpace", "load_kspace", "load_kspace_h5", "load_kspace_nifti", "load_kspace_npy", "save_kspace_h5", "save_kspace_npy"]

_RECONSTRUCTIONS = ("reconstruction_rss", "reconstruction_esc")


@dataclass(frozen=True, eq=False)
class KSpace:
    """k-space measurements in canonical layout.

    Attributes:
        kspace: ``(S, C, H, W)`` complex64.
        mask: ``(S, H, W)`` bool sampling mask, or ``None`` when the source has none (e.g. fully sampled training data).
        multicoil: whether the source had a coil axis.
        kind: ``"h5"``, ``"npy"`` or ``"nifti"``.
        path: the k-space file.
        source_files: the files read (k-space, then mask).
        source_hash: SHA-256 of their bytes concatenated in sorted path order.
        slices: indices (in the file) of the slices read.
        attrs: HDF5 file attributes as Python values (``max``, ``norm``, ``acquisition``, ...); empty otherwise.
        reconstructions: HDF5 reference images by dataset name, ``(S, h, w)`` float32, for the slices read.
        header_xml: the HDF5 ``ismrmrd_header`` text, if any.
    """

    kspace: np.ndarray
    mask: np.ndarray | None
    multicoil: bool
    kind: Literal["h5", "npy", "nifti"]
    path: Path
    source_files: tuple[Path, ...]
    source_hash: str
    slices: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)
    header_xml: str | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(S, C, H, W)``."""
        return tuple(self.kspace.shape)  # type: ignore[return-value]


def _sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _require_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    return path


def _python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _complex(array: np.ndarray, path: Path) -> np.ndarray:
    """Complex64 from a complex array or a real one with a trailing (real, imag) axis."""
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        if array.ndim >= 3 and array.shape[-1] == 2:
            return (array[..., 0].astype(np.float32) + 1j * array[..., 1].astype(np.float32)).astype(np.complex64)
        raise ValueError(
            f"k-space {path} is real with shape {array.shape}; expected complex values or a last axis of 2 (real, imag)"
        )
    raise ValueError(f"k-space {path} has dtype {array.dtype}; expected complex or real numbers")


def _canonical_mask(mask: np.ndarray, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """Binary mask broadcast to ``(S, H, W)`` bool."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all()):
            raise ValueError(f"mask {where} must be binary (0/1 or bool), got values outside {{0, 1}} (dtype {mask.dtype})")
        mask = mask != 0
    try:
        if mask.ndim > 3:
            raise ValueError
        return np.ascontiguousarray(np.broadcast_to(mask, shape))
    except ValueError:
        raise ValueError(
            f"mask {where} has shape {mask.shape}, which does not broadcast to k-space (slices, H, W) = {shape}"
        ) from None


def _select(n: int, slices: slice | Sequence[int] | None) -> list[int]:
    if slices is None:
        return list(range(n))
    if isinstance(slices, slice):
        return list(range(n))[slices]
    picked = [int(s) for s in slices]
    bad = [s for s in picked if not 0 <= s < n]
    if bad or not picked:
        raise ValueError(f"slices must be indices in 0..{n - 1}, got {list(slices)!r}")
    return picked


def _slice_mask(mask: np.ndarray, total: int, picked: list[int]) -> np.ndarray:
    # A per-slice mask (leading axis = all slices of the file) follows the slice selection.
    if mask.ndim == 3 and mask.shape[0] == total and total > 1:
        return mask[picked]
    return mask


def load_kspace_h5(path: str | os.PathLike[str], *, slices: slice | Sequence[int] | None = None) -> KSpace:
    """Read a fastMRI-style HDF5 file.

    Args:
        path: ``.h5`` file.
        slices: which slices to read (``None``: all); only those are loaded, to bound memory.

    Returns:
        :class:`KSpace` with ``kind="h5"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not HDF5, no ``kspace`` dataset, wrong rank or dtype, or a mask that does not match.
    """
    import h5py

    path = _require_file(path, "k-space file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read HDF5 file {path}: {err}") from None
    with handle:
        if "kspace" not in handle:
            raise ValueError(f"HDF5 file {path} has no 'kspace' dataset (found: {sorted(handle.keys())})")
        dset = handle["kspace"]
        if dset.ndim not in (3, 4):
            raise ValueError(f"'kspace' in {path} has shape {dset.shape}; expected (slices, H, W) or (slices, coils, H, W)")
        total = int(dset.shape[0])
        picked = _select(total, slices)
        kspace = _complex(np.stack([dset[i] for i in picked]), path)
        multicoil = dset.ndim == 4
        if not multicoil:
            kspace = kspace[:, None]
        mask = None
        if "mask" in handle:
            raw = _slice_mask(np.asarray(handle["mask"][()]), total, picked)
            mask = _canonical_mask(raw, (len(picked), *kspace.shape[2:]), f"in {path}")
        reconstructions = {
            key: np.stack([np.asarray(handle[key][i], dtype=np.float32) for i in picked])
            for key in _RECONSTRUCTIONS
            if key in handle
        }
        header_xml = _python(handle["ismrmrd_header"][()]) if "ismrmrd_header" in handle else None
        attrs = {str(k): _python(v) for k, v in handle.attrs.items()}
    return KSpace(
        kspace=np.ascontiguousarray(kspace),
        mask=mask,
        multicoil=multicoil,
        kind="h5",
        path=path,
        source_files=(path,),
        source_hash=_sha256([path]),
        slices=tuple(picked),
        attrs=attrs,
        reconstructions=reconstructions,
        header_xml=header_xml,
    )


def _load_mask_file(path: Path) -> np.ndarray:
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"cannot read mask {path}: {err}") from None
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj).T  # reversed axes, as for images
    raise ValueError(f"unsupported mask suffix for {path}; expected .npy, .nii or .nii.gz")


def _finish(kspace: np.ndarray, multicoil: bool, kind: Literal["npy", "nifti"], path: Path, mask_path: Path | None) -> KSpace:
    mask = None
    files = [path]
    if mask_path is not None:
        mask = _canonical_mask(_load_mask_file(mask_path), (kspace.shape[0], *kspace.shape[2:]), str(mask_path))
        files.append(mask_path)
    return KSpace(
        kspace=np.ascontiguousarray(kspace, dtype=np.complex64),
        mask=mask,
        multicoil=multicoil,
        kind=kind,
        path=path,
        source_files=tuple(files),
        source_hash=_sha256(files),
        slices=tuple(range(kspace.shape[0])),
    )


def load_kspace_npy(
    kspace_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str] | None = None,
    *,
    multicoil: bool | None = None,
) -> KSpace:
    """Read NPY k-space (and an optional ``.npy``/NIfTI mask); layouts in the module docstring.

    Args:
        kspace_path: ``.npy`` complex ``(H, W)``, ``(S, H, W)``, ``(S, C, H, W)`` (or real with a last axis of 2).
        mask_path: optional binary mask.
        multicoil: read a 3D array as ``(C, H, W)`` of one slice (``True``) instead of ``(S, H, W)``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: wrong rank or dtype, non-binary mask, or a mask that does not broadcast to ``(S, H, W)``.
    """
    path = _require_file(kspace_path, "k-space file")
    mask_file = None if mask_path is None else _require_file(mask_path, "mask file")
    try:
        raw = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"cannot read NPY k-space {path}: {err}") from None
    array = _complex(raw, path)
    if array.ndim == 2:
        if multicoil:
            raise ValueError(f"k-space {path} is 2D {array.shape}; multicoil=True needs (C, H, W) or (S, C, H, W)")
        kspace, is_multi = array[None, None], False
    elif array.ndim == 3:
        kspace, is_multi = (array[None], True) if multicoil else (array[:, None], False)
    elif array.ndim == 4:
        if multicoil is False:
            raise ValueError(f"k-space {path} is 4D {array.shape} (slices, coils, H, W) but multicoil=False")
        kspace, is_multi = array, True
    else:
        raise ValueError(f"k-space {path} has shape {array.shape}; expected (H, W), (S, H, W) or (S, C, H, W)")
    return _finish(kspace, is_multi, "npy", path, mask_file)


def load_kspace_nifti(kspace_path: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None) -> KSpace:
    """Read NIfTI k-space stored as ``(W, H[, S[, C]])`` complex, or real with a last axis of 2 (real, imag).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unreadable file, wrong rank or dtype, or a mask that does not broadcast to ``(S, H, W)``.
    """
    import nibabel as nib

    path = _require_file(kspace_path, "k-space file")
    mask_file = None if mask_path is None else _require_file(mask_path, "mask file")
    try:
        raw = np.asarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, OSError...
        raise ValueError(f"cannot read NIfTI k-space {path}: {err}") from err
    if np.iscomplexobj(raw):
        array = raw.astype(np.complex64)
    elif raw.ndim >= 3 and raw.shape[-1] == 2:
        array = _complex(raw, path)
    else:
        raise ValueError(f"NIfTI k-space {path} is real with shape {raw.shape}; expected complex or a last axis of 2 (real, imag)")
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"NIfTI k-space {path} has complex shape {array.shape}; expected (W, H), (W, H, S) or (W, H, S, C)")
    multicoil = array.ndim == 4
    while array.ndim < 4:
        array = array[..., None]
    return _finish(array.transpose(2, 3, 1, 0), multicoil, "nifti", path, mask_file)


def load_kspace(
    kspace_path: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None = None, **options: Any
) -> KSpace:
    """Dispatch on the suffix of ``kspace_path``: ``.h5``/``.hdf5``, ``.npy``, ``.nii``/``.nii.gz``.

    ``options`` go to the reader (``slices=`` for HDF5, ``multicoil=`` for NPY). An HDF5 file carries its own mask,
    so ``mask_path`` must then be ``None``.
    """
    name = Path(kspace_path).name.lower()
    if name.endswith((".h5", ".hdf5")):
        if mask_path is not None:
            raise ValueError("mask_path must be None for HDF5 k-space: the file carries its own 'mask' dataset")
        return load_kspace_h5(kspace_path, **options)
    if name.endswith(".npy"):
        return load_kspace_npy(kspace_path, mask_path, **options)
    if name.endswith((".nii", ".nii.gz")):
        return load_kspace_nifti(kspace_path, mask_path, **options)
    raise ValueError(f"unsupported k-space suffix for {kspace_path}; expected .h5, .hdf5, .npy, .nii or .nii.gz")


def _check_kspace(kspace: Any, mask: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if hasattr(kspace, "detach"):
        kspace = kspace.detach().cpu().numpy()
    kspace = np.asarray(kspace)
    if not np.iscomplexobj(kspace) or kspace.ndim != 4:
        raise ValueError(f"kspace must be complex (S, C, H, W), got dtype {kspace.dtype} shape {kspace.shape}")
    if mask is not None:
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        mask = _canonical_mask(mask, (kspace.shape[0], *kspace.shape[2:]), "argument")
    return kspace.astype(np.complex64, copy=False), mask


def _compact_mask(mask: np.ndarray) -> np.ndarray:
    """The smallest fastMRI-like form: ``(W,)`` for a column mask shared by all slices, else ``(S, H, W)``."""
    if (mask == mask[:1]).all() and (mask[0] == mask[0, :1]).all():
        return mask[0, 0]
    return mask


def save_kspace_h5(
    kspace: Any,
    path: str | os.PathLike[str],
    *,
    mask: Any = None,
    attrs: Mapping[str, Any] | None = None,
    multicoil: bool | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write k-space in fastMRI layout (atomically): ``kspace`` ``(S, H, W)`` or ``(S, C, H, W)`` complex64.

    Args:
        kspace: ``(S, C, H, W)`` complex (NumPy or torch).
        path: output ``.h5``.
        mask: optional binary mask broadcastable to ``(S, H, W)``; stored as ``(W,)`` when it is one column mask
            shared by all slices and rows (as in fastMRI), else as ``(S, H, W)``.
        attrs: file attributes (e.g. ``{"acquisition": "CORPD_FBK", "max": ..., "norm": ...}``).
        multicoil: store the coil axis; default ``C > 1``. ``False`` needs ``C == 1``.
        overwrite: replace an existing output.
        inputs: input files the output must not replace.
    """
    import h5py

    path = Path(path)
    if not path.name.lower().endswith((".h5", ".hdf5")):
        raise ValueError(f"HDF5 output path must end with .h5 or .hdf5, got {path.name!r}")
    data, mask_c = _check_kspace(kspace, mask)
    multicoil = data.shape[1] > 1 if multicoil is None else multicoil
    if not multicoil and data.shape[1] != 1:
        raise ValueError(f"multicoil=False needs one coil, got kspace with {data.shape[1]} coils")
    refuse_inputs(path, inputs)
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("kspace", data=data if multicoil else data[:, 0])
        if mask_c is not None:
            handle.create_dataset("mask", data=_compact_mask(mask_c))
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value
    return path


def save_kspace_npy(
    kspace: Any,
    path: str | os.PathLike[str],
    *,
    mask: Any = None,
    mask_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Write ``(S, C, H, W)`` complex64 k-space as NPY, and the mask as bool ``(S, H, W)`` NPY at ``mask_path``.

    Returns:
        The written paths (k-space, then mask when given).
    """
    path = Path(path)
    for item in (path, mask_path):
        if item is not None and not Path(item).name.lower().endswith(".npy"):
            raise ValueError(f"NPY output path must end with .npy, got {Path(item).name!r}")
    data, mask_c = _check_kspace(kspace, mask)
    if (mask_c is None) != (mask_path is None):
        raise ValueError("mask and mask_path must be given together")
    refuse_inputs(path, inputs)
    if mask_path is None:
        with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as handle:
            np.save(handle, data)
        return [path]
    refuse_inputs(mask_path, inputs)
    check_writable(mask_path, overwrite=overwrite)
    # Nested: a failure while writing either file leaves neither.
    with atomic_path(path, overwrite=overwrite) as tmp, atomic_path(mask_path, overwrite=overwrite) as tmp_mask:
        with tmp.open("wb") as handle:
            np.save(handle, data)
        with tmp_mask.open("wb") as handle:
            np.save(handle, mask_c)
    return [path, Path(mask_path)]
