"""Read and write scans with their geometry: DICOM series/files, NIfTI, PNG and NPY.

Readers are pydicom and nibabel used directly (not MONAI ``LoadImage``): they give exact control over slice order,
rescaling and the affine, and the tests cross-check the geometry against MONAI's ``PydicomReader``.

Conventions of :class:`Scan` (one for every input kind):

* ``array``: float32, shape ``(S, H, W)`` = (slices, rows, columns). A 2D image is ``(1, H, W)``.
  For DICOM, ``array[k, r, c]`` is row ``r``, column ``c`` of the k-th slice along the slice normal.
* ``affine``: 4x4 float64 mapping the voxel index ``(i, j, k, 1)`` to **RAS+** world millimetres, where
  ``(i, j, k) = (column, row, slice)``, i.e. the *reversed* array axes: ``array[k, j, i]``. This is the NIfTI / nibabel
  and MONAI convention for ``array.transpose(2, 1, 0)``, so ``affine`` equals nibabel's ``img.affine`` for NIfTI inputs
  and MONAI's affine (up to MONAI's slice order) for DICOM. DICOM's LPS geometry is converted with
  ``diag(-1, -1, 1, 1)``; :attr:`Scan.affine_lps` gives it back.
* ``spacing``: ``(di, dj, dk)`` in mm, the lengths of the affine's first three columns (NIfTI ``pixdim`` order:
  column spacing, row spacing, slice step).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .atomic import atomic_path, check_writable, refuse_inputs

__all__ = ["LPS_TO_RAS", "Scan", "check_array", "load_scan", "save_nifti", "save_npy", "save_scan"]

ScanKind = Literal["dicom", "nifti", "png", "npy"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_ORIENTATION_TOL = 1e-4  # direction cosines: slices with IOP within this are parallel
_POSITION_TOL_MM = 1e-3  # absolute floor for slice-position checks
_POSITION_TOL_REL = 1e-2  # relative to the slice step: real scanners write positions with few decimals


@dataclass(frozen=True, eq=False)
class Scan:
    """A scan in canonical layout with its geometry and provenance.

    Attributes:
        array: ``(S, H, W)`` float32 intensities (DICOM: after Rescale Slope/Intercept, i.e. modality values
            such as HU; NIfTI: after ``scl_slope``/``scl_inter``; PNG/NPY: stored values).
        affine: ``(4, 4)`` float64, voxel ``(i, j, k) = (col, row, slice)`` to RAS+ mm (see module docstring).
            PNG/NPY: identity (1 mm, no world geometry).
        spacing: ``(di, dj, dk)`` mm, column norms of ``affine[:3, :3]``.
        kind: ``"dicom"``, ``"nifti"``, ``"png"`` or ``"npy"``.
        header: NIfTI: the nibabel header. DICOM: the source ``pydicom.Dataset`` list in array (slice) order, with
            Pixel Data removed to save memory. PNG/NPY: ``None``.
        source_hash: SHA-256 hex digest of the bytes of ``source_files`` concatenated in sorted path order.
        path: the path given to :func:`load_scan`.
        source_files: the files read (a DICOM series: its slice files in sorted path order).
        rescale: DICOM: ``(slope, intercept)`` applied to each slice, in array order ((1, 0) when absent).
            NIfTI: ``((scl_slope, scl_inter),)`` when the header scales the data. Otherwise ``None``.
        slice_affines: ``(S, 4, 4)`` RAS+ affine of each slice (the slice's own ``k = 0`` plane); for DICOM each comes
            from that file's position and orientation, so it is exact even when ``regular`` is false.
        regular: the slices form one parallel, evenly spaced stack, so ``affine`` describes every voxel. False only
            for DICOM series loaded with ``allow_irregular=True``; ``affine`` then describes slice 0 only.
        volume_index: the volume taken from a 4D NIfTI, else ``None``.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    kind: ScanKind
    header: Any
    source_hash: str
    path: Path
    source_files: tuple[Path, ...]
    rescale: tuple[tuple[float, float], ...] | None
    slice_affines: np.ndarray
    regular: bool = True
    volume_index: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(S, H, W)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def affine_lps(self) -> np.ndarray:
        """The affine in DICOM's LPS+ world frame."""
        return LPS_TO_RAS @ self.affine


# ----------------------------------------------------------------------------------------------------- helpers


def _sha256(chunks: list[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    return float(norms[0]), float(norms[1]), float(norms[2])


def _stacked_slice_affines(affine: np.ndarray, slices: int) -> np.ndarray:
    out = np.repeat(affine[None], slices, axis=0)
    out[:, :3, 3] += np.arange(slices)[:, None] * affine[:3, 2][None]
    return out


def _is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _input_kind(path: Path) -> ScanKind:
    name = path.name.lower()
    if path.is_dir() or name.endswith(_DICOM_SUFFIXES):
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith(".npy"):
        return "npy"
    with path.open("rb") as handle:  # DICOM files often have no suffix; the preamble tells
        if _is_dicom_bytes(handle.read(132)):
            return "dicom"
    suffix = "".join(path.suffixes) or "(none)"
    raise ValueError(
        f"unsupported input suffix {suffix!r} for {path}; expected a DICOM file or series folder, .nii, .nii.gz, .png or .npy"
    )


# ------------------------------------------------------------------------------------------------------- DICOM


def _read_dicom_folder(folder: Path) -> tuple[list[Path], str, list[Any]]:
    """The DICOM files of ``folder`` (sorted paths), the SHA-256 of their bytes in that order, their datasets."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    digest = hashlib.sha256()
    paths: list[Path] = []
    datasets: list[Any] = []
    for path in entries:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if not _is_dicom_bytes(data):
            continue
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            continue
        if str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", ""))) == _DICOMDIR_SOP_CLASS:
            continue
        digest.update(data)  # hash exactly the bytes that were parsed
        paths.append(path)
        datasets.append(ds)
    if not datasets:
        subfolders = sum(p.is_dir() for p in entries)
        hint = f" (it has {subfolders} sub-folder(s); pass the series folder itself)" if subfolders else ""
        raise ValueError(f"input folder {folder} contains no DICOM files{hint}")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(series) > 1:
        raise ValueError(
            f"input folder {folder} mixes {len(series)} DICOM series (SeriesInstanceUID {', '.join(series[:3])}"
            f"{', ...' if len(series) > 3 else ''}); pass a folder holding one series"
        )
    return paths, digest.hexdigest(), datasets


def _check_dicom_image(ds: Any, path: Path) -> None:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ValueError(f"DICOM file {path} has no pixel data (blank pixel data); it is not an image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(
            f"DICOM file {path} is multi-frame ({frames} frames); only single-frame slices are supported"
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ValueError(f"DICOM file {path} has SamplesPerPixel={samples}; expected a grayscale image (1)")
    if "ModalityLUTSequence" in ds:
        raise ValueError(f"DICOM file {path} uses a Modality LUT Sequence; only Rescale Slope/Intercept is supported")


def _rescale_of(ds: Any) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    slope_f = 1.0 if slope in (None, "") else float(slope)
    intercept_f = 0.0 if intercept in (None, "") else float(intercept)
    return slope_f, intercept_f


def _slice_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]] | None:
    """(row cosine, column cosine, position, (row spacing, column spacing)) in LPS, or None when absent."""
    iop = ds.get("ImageOrientationPatient", None)
    ipp = ds.get("ImagePositionPatient", None)
    spacing = ds.get("PixelSpacing", None)
    if not iop or not ipp or not spacing or len(iop) != 6 or len(ipp) != 3 or len(spacing) != 2:
        return None
    iop_a = np.asarray([float(v) for v in iop])
    return iop_a[:3], iop_a[3:], np.asarray([float(v) for v in ipp]), (float(spacing[0]), float(spacing[1]))


def _plane_affine_lps(row: np.ndarray, col: np.ndarray, pos: np.ndarray, spacing: tuple[float, float], step: np.ndarray) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]  # i runs along a row: column spacing
    affine[:3, 1] = col * spacing[0]  # j runs down a column: row spacing
    affine[:3, 2] = step
    affine[:3, 3] = pos
    return affine


def _slice_thickness(ds: Any) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key, None)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _instance_numbers(datasets: list[Any]) -> list[int] | None:
    try:
        return [int(ds.InstanceNumber) for ds in datasets]
    except (AttributeError, TypeError, ValueError):
        return None


def _order_dicom(datasets: list[Any], paths: list[Path], folder: Path, allow_irregular: bool) -> tuple[list[int], np.ndarray, bool]:
    """Slice order, the LPS volume affine and whether the stack is regular."""
    geoms = [_slice_geometry(ds) for ds in datasets]
    n = len(datasets)
    if n == 1:
        geom = geoms[0]
        if geom is None:  # e.g. CR/DX/SC: no patient geometry; pixel grid in mm when a spacing is known
            spacing = datasets[0].get("PixelSpacing", None) or datasets[0].get("ImagerPixelSpacing", None) or (1.0, 1.0)
            geom = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3), (float(spacing[0]), float(spacing[1])))
        row, col, pos, spacing2 = geom
        step = np.cross(row, col) * _slice_thickness(datasets[0])
        return [0], _plane_affine_lps(row, col, pos, spacing2, step), True
    missing = [paths[i].name for i, g in enumerate(geoms) if g is None]
    if missing:
        raise ValueError(
            f"DICOM series {folder} has slices without ImagePositionPatient/ImageOrientationPatient/PixelSpacing "
            f"(e.g. {missing[0]}); cannot order its slices"
        )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise ValueError(f"DICOM series {folder} has slices of different sizes {sorted(shapes)}; expected one size")
    row0, col0 = geoms[0][0], geoms[0][1]  # type: ignore[index]
    iops = np.stack([np.concatenate([g[0], g[1]]) for g in geoms])  # type: ignore[index]
    spacings = np.asarray([g[3] for g in geoms])  # type: ignore[index]
    positions = np.stack([g[2] for g in geoms])  # type: ignore[index]
    parallel = bool(np.abs(iops - iops[0]).max() <= _ORIENTATION_TOL)
    same_spacing = bool(np.abs(spacings - spacings[0]).max() <= 1e-4 * max(spacings[0]))
    normal = np.cross(row0, col0)
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    gaps = np.diff(along[order])
    problem = None
    if not parallel:
        problem = "its slices are not parallel (ImageOrientationPatient differs between slices)"
    elif not same_spacing:
        problem = "its slices have different PixelSpacing"
    elif gaps.min() <= _POSITION_TOL_MM:
        problem = "several slices share one position (multiple echoes, phases or time points in one series?)"
    else:
        numbers = _instance_numbers(datasets)
        if numbers is not None and all(numbers[a] > numbers[b] for a, b in itertools.pairwise(order)):
            order = order[::-1]  # the scanner numbered the slices against the normal: keep its order
        ordered = positions[order]
        step = (ordered[-1] - ordered[0]) / (n - 1)
        predicted = ordered[0] + np.arange(n)[:, None] * step[None]
        tol = max(_POSITION_TOL_MM, _POSITION_TOL_REL * float(np.linalg.norm(step)))
        if np.abs(ordered - predicted).max() > tol:
            problem = f"its slice positions are not evenly spaced (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm)"
        else:
            first = geoms[order[0]]
            return order, _plane_affine_lps(first[0], first[1], ordered[0], first[3], step), True  # type: ignore[index]
    if not allow_irregular:
        raise ValueError(
            f"DICOM series {folder} is not one regular volume: {problem}; "
            "pass allow_irregular=True to load it slice by slice"
        )
    if not (parallel and same_spacing and gaps.min() > _POSITION_TOL_MM):  # else uneven gaps: position order holds
        numbers = _instance_numbers(datasets)
        if numbers is None:
            raise ValueError(f"DICOM series {folder}: {problem}, and some slices lack InstanceNumber to order them")
        order = [int(i) for i in np.argsort(numbers, kind="stable")]
    first = geoms[order[0]]
    step = np.cross(first[0], first[1]) * _slice_thickness(datasets[order[0]])  # type: ignore[index]
    return order, _plane_affine_lps(*first, step), False  # type: ignore[misc]


def _load_dicom(path: Path, allow_irregular: bool) -> Scan:
    import pydicom

    if path.is_dir():
        paths, source_hash, datasets = _read_dicom_folder(path)
    else:
        data = path.read_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except pydicom.errors.InvalidDicomError as err:
            raise ValueError(f"input {path} is not a DICOM file ({err})") from None
        paths, source_hash, datasets = [path], _sha256([data]), [ds]
    for ds, p in zip(datasets, paths, strict=True):
        _check_dicom_image(ds, p)
    order, affine_lps, regular = _order_dicom(datasets, paths, path, allow_irregular)

    slices: list[np.ndarray] = []
    rescale: list[tuple[float, float]] = []
    constant = True
    first_value: float | None = None
    slice_affines = np.empty((len(order), 4, 4))
    for out_k, i in enumerate(order):
        ds = datasets[i]
        try:
            stored = ds.pixel_array
        except Exception as err:  # decoder plugins raise many types; report them uniformly
            raise ValueError(f"cannot decode the pixel data of DICOM file {paths[i]}: {err}") from err
        if constant:
            lo, hi = float(stored.min()), float(stored.max())
            first_value = lo if first_value is None else first_value
            constant = lo == hi == first_value
        slope, intercept = _rescale_of(ds)
        rescale.append((slope, intercept))
        slices.append((stored.astype(np.float64) * slope + intercept).astype(np.float32))
        geom = _slice_geometry(ds)
        if geom is None:
            slice_affines[out_k] = LPS_TO_RAS @ affine_lps
        else:
            slice_affines[out_k] = LPS_TO_RAS @ _plane_affine_lps(*geom, affine_lps[:3, 2])
    if constant:
        raise ValueError(f"DICOM input {path} has blank pixel data (every stored value is {first_value:g})")
    headers = []
    for i in order:
        ds = datasets[i]
        for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if tag in ds:
                del ds[tag]
        headers.append(ds)
    affine = LPS_TO_RAS @ affine_lps
    return Scan(
        array=np.stack(slices),
        affine=affine,
        spacing=_spacing(affine),
        kind="dicom",
        header=headers,
        source_hash=source_hash,
        path=path,
        source_files=tuple(paths),
        rescale=tuple(rescale),
        slice_affines=slice_affines,
        regular=regular,
    )


# --------------------------------------------------------------------------------------------- NIfTI, PNG, NPY


def _load_nifti(path: Path, volume_index: int | None) -> Scan:
    import nibabel as nib

    blob = path.read_bytes()
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, EOFError, OSError...
        raise ValueError(f"cannot read NIfTI file {path}: {err}") from err
    shape = tuple(int(s) for s in img.shape)
    if np.issubdtype(img.get_data_dtype(), np.complexfloating):
        raise ValueError(f"NIfTI file {path} is complex; for k-space use load_kspace_nifti")
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4 or len(shape) < 2:
        raise ValueError(f"NIfTI file {path} has shape {shape}; expected 2D, 3D or 4D")
    if len(shape) == 4:
        volumes = shape[3]
        if volume_index is None and volumes == 1:
            volume_index = 0
        if volume_index is None:
            raise ValueError(
                f"NIfTI file {path} is 4D with {volumes} volumes; pass volume_index=0..{volumes - 1} to choose one"
            )
        if not 0 <= volume_index < volumes:
            raise ValueError(f"volume_index must be in 0..{volumes - 1} for {path}, got {volume_index}")
        data = np.asarray(img.dataobj[(slice(None),) * 3 + (volume_index,)], dtype=np.float32)
    else:
        if volume_index is not None:
            raise ValueError(f"volume_index applies to 4D NIfTI only; {path} has shape {shape}, got volume_index={volume_index}")
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    if data.ndim == 2:
        data = data[:, :, None]
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    affine = np.asarray(img.affine, dtype=np.float64)
    # nibabel moves scl_slope/scl_inter from the header to the array proxy on load.
    slope, inter = float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0))
    rescale = None if (slope, inter) == (1.0, 0.0) else ((slope, inter),)
    return Scan(
        array=array,
        affine=affine,
        spacing=_spacing(affine),
        kind="nifti",
        header=img.header,
        source_hash=_sha256([blob]),
        path=path,
        source_files=(path,),
        rescale=rescale,
        slice_affines=_stacked_slice_affines(affine, array.shape[0]),
        volume_index=volume_index,
    )


def _plain_scan(array: np.ndarray, path: Path, kind: ScanKind, blob: bytes) -> Scan:
    affine = np.eye(4)
    return Scan(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        spacing=(1.0, 1.0, 1.0),
        kind=kind,
        header=None,
        source_hash=_sha256([blob]),
        path=path,
        source_files=(path,),
        rescale=None,
        slice_affines=_stacked_slice_affines(affine, array.shape[0]),
    )


def _load_png(path: Path) -> Scan:
    from PIL import Image, UnidentifiedImageError

    blob = path.read_bytes()
    try:
        with Image.open(io.BytesIO(blob)) as img:
            mode = img.mode
            if mode not in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1"):
                raise ValueError(f"PNG {path} has mode {mode!r}; expected a grayscale PNG (mode L, I;16, I or F)")
            array = np.asarray(img)
    except UnidentifiedImageError as err:
        raise ValueError(f"cannot read PNG {path}: {err}") from None
    return _plain_scan(array[None].astype(np.float32), path, "png", blob)


def _load_npy(path: Path) -> Scan:
    blob = path.read_bytes()
    try:
        array = np.load(io.BytesIO(blob), allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"cannot read NPY {path}: {err}") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise ValueError(f"NPY {path} has dtype {array.dtype}; expected a real numeric array (k-space: load_kspace_npy)")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"NPY {path} has shape {array.shape}; expected (H, W) or (S, H, W)")
    return _plain_scan(array.astype(np.float32), path, "npy", blob)


def load_scan(path: str | os.PathLike[str], *, volume_index: int | None = None, allow_irregular: bool = False) -> Scan:
    """Load a scan with its geometry into the canonical :class:`Scan` layout ``(S, H, W)`` float32.

    Inputs: a DICOM series folder (one series; non-DICOM files, hidden files and DICOMDIR are skipped), a single
    DICOM file (any suffix, recognised by its preamble), NIfTI ``.nii``/``.nii.gz`` (2D, 3D, or 4D with
    ``volume_index``), grayscale PNG, and NPY ``(H, W)`` or ``(S, H, W)``.

    DICOM series are sorted by ImagePositionPatient along the slice normal (row cosine x column cosine): ascending,
    or descending when InstanceNumber strictly decreases along the normal (the scanner's order, which is also the
    order MONAI's ``PydicomReader`` uses). The slices must share one orientation and pixel spacing and be evenly
    spaced. Rescale Slope/Intercept is applied per slice and recorded in ``Scan.rescale``.

    Args:
        path: file or DICOM series folder.
        volume_index: which volume of a 4D NIfTI to take (required when it has more than one).
        allow_irregular: accept a DICOM series that is not one regular volume (non-parallel slices, uneven gaps,
            shared positions). Slices are then ordered by position when parallel and distinct, else by
            InstanceNumber; ``Scan.regular`` is false and ``Scan.slice_affines`` carries each slice's geometry.

    Returns:
        The :class:`Scan`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported suffix, empty folder, mixed series, blank or missing pixel data, multi-frame or colour
            DICOM, irregular series (without ``allow_irregular``), 4D NIfTI without ``volume_index``, bad shapes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if volume_index is not None and (isinstance(volume_index, bool) or not isinstance(volume_index, (int, np.integer))):
        raise TypeError(f"volume_index must be an int or None, got {volume_index!r}")
    kind = _input_kind(path)
    if kind != "nifti" and volume_index is not None:
        raise ValueError(f"volume_index applies to 4D NIfTI only; {path} is {kind}, got volume_index={volume_index}")
    if kind == "dicom":
        return _load_dicom(path, allow_irregular)
    if kind == "nifti":
        return _load_nifti(path, None if volume_index is None else int(volume_index))
    if kind == "png":
        return _load_png(path)
    return _load_npy(path)


# ------------------------------------------------------------------------------------------------------ writers


def check_array(array: Any, reference: Scan) -> np.ndarray:
    """``array`` as float32 ``(S, H, W)`` matching ``reference``; accepts NumPy arrays and CPU/GPU tensors."""
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if np.iscomplexobj(array):
        raise TypeError(f"array must be real (take the magnitude of a complex image first), got dtype {array.dtype}")
    if array.ndim == 2 and reference.array.shape[0] == 1:
        array = array[None]
    if tuple(array.shape) != reference.shape:
        raise ValueError(f"array has shape {tuple(array.shape)}; the reference scan {reference.path} has shape {reference.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"array has {int((~np.isfinite(array)).sum())} non-finite values; expected finite intensities")
    return np.ascontiguousarray(array, dtype=np.float32)


def save_nifti(array: Any, reference: Scan, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``array`` as NIfTI with the reference's geometry, atomically.

    A NIfTI reference keeps its header (NIfTI-1 or -2, sform/qform and codes, units, description) with data type
    float32, ``scl_slope``/``scl_inter`` reset (no scaling) and ``cal_min``/``cal_max`` cleared; the written affine
    equals ``reference.affine`` exactly. A 2D NIfTI reference is written 2D; a 4D one as the chosen 3D volume.
    Other references get a fresh NIfTI-1 header with ``reference.affine`` as sform and qform (code 1 "scanner" for
    DICOM, 2 "aligned" for PNG/NPY, whose affine is the identity).

    Args:
        array: ``(S, H, W)`` real values (``(H, W)`` when the reference has one slice).
        reference: the scan the array was computed from.
        path: output ``.nii`` or ``.nii.gz``.
        overwrite: replace an existing output.

    Returns:
        ``path``.

    Raises:
        FileExistsError: the output exists and ``overwrite`` is false.
        ValueError: wrong suffix or shape, an irregular DICOM reference, or the output is an input file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI output path must end with .nii or .nii.gz, got {path.name!r}")
    data = check_array(array, reference)
    if not reference.regular:
        raise ValueError(f"reference {reference.path} is an irregular DICOM series; NIfTI cannot hold its geometry (write DICOM)")
    refuse_inputs(path, reference.source_files)
    check_writable(path, overwrite=overwrite)
    volume = data.transpose(2, 1, 0)
    if reference.kind == "nifti":
        header = reference.header.copy()
        if len(header.get_data_shape()) == 2:
            volume = volume[:, :, 0]
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = image_class(volume, reference.affine, header=header)
    else:
        img = nib.Nifti1Image(volume, reference.affine)
        code = 1 if reference.kind == "dicom" else 2
        img.set_sform(reference.affine, code=code)
        img.set_qform(reference.affine, code=code)
        img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(np.nan, np.nan)
    img.header["cal_min"] = 0.0
    img.header["cal_max"] = 0.0
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return path


def save_npy(array: Any, reference: Scan, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``array`` as float32 ``(S, H, W)`` NPY, atomically (no geometry; keep the reference for that)."""
    path = Path(path)
    if not path.name.lower().endswith(".npy"):
        raise ValueError(f"NPY output path must end with .npy, got {path.name!r}")
    data = check_array(array, reference)
    refuse_inputs(path, reference.source_files)
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as handle:
        np.save(handle, data)
    return path


def save_scan(
    array: Any,
    reference: Scan,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    series_description: str = "invdiff reconstruction",
) -> list[Path]:
    """Write ``array`` in the format named by ``path``: ``.nii``/``.nii.gz``, ``.npy``, or a DICOM series folder.

    A path without one of those suffixes is a folder for a derived DICOM series (:func:`save_dicom_series`).

    Returns:
        The files written (one for NIfTI/NPY, one per slice for DICOM).
    """
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return [save_nifti(array, reference, path, overwrite=overwrite)]
    if name.endswith(".npy"):
        return [save_npy(array, reference, path, overwrite=overwrite)]
    if name.endswith((".png", ".jpg", ".jpeg", ".dcm", ".h5")):
        raise ValueError(
            f"cannot write scans as {Path(path).suffix!r}; use .nii, .nii.gz, .npy or a folder name for a DICOM series"
        )
    from .dicom_writer import save_dicom_series

    return save_dicom_series(array, reference, path, series_description=series_description, overwrite=overwrite)
