"""Write a reconstruction as a NEW derived DICOM series (pydicom only; one single-frame file per slice).

What is written:

* **DICOM reference** (CT or MR Image Storage keeps its SOP class; any other class becomes Secondary Capture):
  each slice starts from a copy of its source slice's attributes (patient, study, frame of reference, acquisition and
  geometry modules: ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, FrameOfReferenceUID,
  InstanceNumber), minus private tags, pixel-module and overlay attributes, icons, signatures and equipment identity.
  New: SeriesInstanceUID and SOPInstanceUIDs (``pydicom.uid.generate_uid``), SeriesNumber, SeriesDescription,
  ImageType ``DERIVED\\SECONDARY\\<source values 3+>``, DerivationDescription, SourceImageSequence (the source slice,
  purpose DCM 121322 "Source image for image processing operation"), ReferencedSeriesSequence (all source
  instances), equipment = invdiff, dates and times of now.
* **NIfTI / PNG / NPY reference**: a new study of Secondary Capture Image Storage objects (Modality ``OT``,
  ConversionType ``WSD``; patient module empty), new Study/Series/SOP/FrameOfReference UIDs, and the Image Plane
  attributes taken from ``reference.affine`` converted to LPS: ImageOrientationPatient from the directions of its
  ``i``/``j`` columns, PixelSpacing from their lengths, ImagePositionPatient of slice ``k`` = origin + ``k`` times the
  ``k`` column, SliceThickness = its length. (Secondary Capture does not list the Image Plane module, so validators
  report these as standard-extended attributes; MONAI's PydicomReader and ``load_scan`` read them.)
* Laterality, when neither it nor ImageLaterality is present, is written empty (type 2C: "unknown").

Pixels: 16-bit signed (``BitsStored`` 16) with one RescaleSlope/RescaleIntercept for the whole series; values that
are integers in [-32768, 32767] are stored exactly with slope 1 and intercept 0, anything else is quantised over
65534 steps, so the error is at most half a step plus the DS rounding of slope and intercept (checked, < one step).
MR Image Storage has no Modality LUT module, so for MR the rescale tags are written only when not the identity
(validators warn about them; readers such as pydicom and MONAI apply them).
Transfer syntax: Explicit VR Little Endian, with a file meta group and preamble.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_dir, check_writable, refuse_inputs
from .io import Scan, check_array

__all__ = ["quantise_int16", "save_dicom_series"]

_CT = "1.2.840.10008.5.1.4.1.1.2"
_MR = "1.2.840.10008.5.1.4.1.1.4"
_SC = "1.2.840.10008.5.1.4.1.1.7"
_KEEP_SOP_CLASSES = (_CT, _MR, _SC)

# Group 0028 attributes that still describe the derived pixels (spacing, lossy history, burned-in text).
_KEEP_0028 = {0x00280030, 0x00280034, 0x00280A02, 0x00280A04, 0x00282110, 0x00282112, 0x00282114, 0x00280301, 0x00280302}
_DROP = {
    0x00080008,  # ImageType (rewritten)
    0x00080012, 0x00080013, 0x00080014,  # InstanceCreation Date/Time, InstanceCreatorUID
    0x00080018,  # SOPInstanceUID
    0x00080021, 0x00080023, 0x00080031, 0x00080033,  # Series/Content Date/Time
    0x0008103E,  # SeriesDescription
    0x00080070, 0x00081010, 0x00081090, 0x00181000, 0x00181020,  # equipment identity (the derived series is ours)
    0x00081115,  # ReferencedSeriesSequence
    0x00082111, 0x00082112, 0x00089215, 0x00420013,  # derivation, source image/instance sequences
    0x0020000E, 0x00200011,  # SeriesInstanceUID, SeriesNumber
    0x00204000,  # ImageComments (describe the source pixels)
    0x00880200,  # IconImageSequence
    0x4FFE0001, 0xFFFAFFFA, 0xFFFCFFFC,  # MAC parameters, digital signatures, trailing padding
}


def _keep(tag: Any) -> bool:
    group = tag.group
    if tag.is_private or group == 0x0002 or group == 0x7FE0:
        return False
    if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:  # curves, overlays
        return False
    if group == 0x0028:
        return int(tag) in _KEEP_0028
    return int(tag) not in _DROP


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    text = format_number_as_ds(float(value))
    return "0" if float(text) == 0 else text


def quantise_int16(data: np.ndarray) -> tuple[np.ndarray, str, str]:
    """Map float data to int16 stored values with one Rescale Slope/Intercept (as DS strings).

    ``data ≈ slope * stored + intercept``; integer data in the int16 range is exact (slope 1, intercept 0).

    Args:
        data: real array, finite.

    Returns:
        ``(stored int16 array, slope string, intercept string)``; the strings are what DICOM stores, and the
        quantisation uses exactly the values they represent.

    Raises:
        ValueError: the value range cannot be stored within one quantisation step (DS precision exhausted).
    """
    data = np.asarray(data, dtype=np.float64)
    lo, hi = float(data.min()), float(data.max())
    if lo >= -32768 and hi <= 32767 and np.array_equal(data, np.round(data)):
        return data.astype(np.int16), "1", "0"
    if hi == lo:
        slope_s, intercept_s = "1", _ds(lo)
    else:
        slope_s = _ds((hi - lo) / 65534.0)  # one spare level absorbs the DS rounding of slope and intercept
        intercept_s = _ds(lo + 32767.0 * float(slope_s))
    slope, intercept = float(slope_s), float(intercept_s)
    stored = np.clip(np.round((data - intercept) / slope), -32768, 32767)
    error = float(np.abs(stored * slope + intercept - data).max())
    if error > slope:
        raise ValueError(
            f"array range [{lo:g}, {hi:g}] cannot be stored in 16 bits with DICOM DS precision (error {error:g} > step {slope:g})"
        )
    return stored.astype(np.int16), slope_s, intercept_s


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _orientation_letters(direction: np.ndarray) -> str:
    """Patient Orientation letters (LPS: +x L, +y P, +z H) of a direction, largest component first."""
    letters = ""
    for axis in np.argsort(-np.abs(direction)):
        if abs(direction[axis]) > 1e-4:
            letters += ("LR", "PA", "HF")[axis][0 if direction[axis] > 0 else 1]
    return letters


def _plane_from_affine(reference: Scan) -> list[dict[str, Any]]:
    """Image Plane attributes per slice from the reference's affine (LPS)."""
    affine = reference.affine_lps
    i_col, j_col, k_col, origin = affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3]
    di, dj, dk = (float(np.linalg.norm(v)) for v in (i_col, j_col, k_col))
    if min(di, dj, dk) <= 0:
        raise ValueError(f"reference {reference.path} has a singular affine; DICOM needs positive voxel sizes")
    row, col = i_col / di, j_col / dj
    if abs(float(row @ col)) > 1e-4:
        raise ValueError(
            f"reference {reference.path} affine has shear between its i and j axes (cos = {float(row @ col):.2g}); "
            "DICOM ImageOrientationPatient needs orthogonal rows and columns"
        )
    planes = []
    for k in range(reference.shape[0]):
        pos = origin + k * k_col
        planes.append(
            {
                "ImageOrientationPatient": [_ds(v) for v in (*row, *col)],
                "ImagePositionPatient": [_ds(v) for v in pos],
                "PixelSpacing": [_ds(dj), _ds(di)],  # (between rows, between columns)
                "SliceThickness": _ds(dk),
                "PatientOrientation": [_orientation_letters(row), _orientation_letters(col)],
            }
        )
    return planes


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{name} must be 1..{limit} printable characters without backslash, got {value!r}")


def _version() -> str:
    from invdiff import __version__

    return __version__


def _new_dataset(attributes: dict[str, Any]) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def _source_reference(src: Any) -> Any:
    code = _new_dataset(
        {"CodeValue": "121322", "CodingSchemeDesignator": "DCM", "CodeMeaning": "Source image for image processing operation"}
    )
    return _new_dataset(
        {
            "ReferencedSOPClassUID": src.SOPClassUID,
            "ReferencedSOPInstanceUID": src.SOPInstanceUID,
            "PurposeOfReferenceCodeSequence": [code],
        }
    )


def _derived_from_dicom(src: Any) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for elem in src:
        if _keep(elem.tag):
            ds.add(copy.deepcopy(elem))
    if "PixelAspectRatio" in ds and not ds.PixelAspectRatio:  # type 1C: empty is invalid
        del ds.PixelAspectRatio
    return ds


def save_dicom_series(
    array: Any,
    reference: Scan,
    folder: str | os.PathLike[str],
    *,
    series_description: str,
    overwrite: bool = False,
    series_number: int | None = None,
    derivation_description: str | None = None,
) -> list[Path]:
    """Write ``array`` as a new derived DICOM series into ``folder`` (atomically: temporary folder, then rename).

    Args:
        array: ``(S, H, W)`` real values in the reference's units (e.g. HU), slice ``k`` on the geometry of the
            reference's slice ``k``; ``(H, W)`` when the reference has one slice. NumPy or torch.
        reference: the :class:`Scan` the array was computed from (DICOM: its datasets supply every kept attribute).
        folder: output folder; must not exist, be empty, or (with ``overwrite``) hold only ``.dcm`` files.
        series_description: SeriesDescription (LO, at most 64 characters).
        overwrite: replace an existing non-empty output folder.
        series_number: SeriesNumber; default the source's plus 1000 (DICOM reference) or 1.
        derivation_description: DerivationDescription (ST, at most 1024 characters); default names invdiff, its
            version and the source series or file.

    Returns:
        The written files in slice (array) order, ``folder/slice_0000.dcm`` onwards.

    Raises:
        FileExistsError: ``folder`` holds files and ``overwrite`` is false.
        ValueError: shape mismatch, non-finite values, bad text, output overlapping the input, sheared affine.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    data = check_array(array, reference)
    _check_text("series_description", series_description, 64)
    _check_text("derivation_description", derivation_description, 1024)
    if series_number is not None and (isinstance(series_number, bool) or not isinstance(series_number, int) or series_number < 0):
        raise ValueError(f"series_number must be a non-negative int, got {series_number!r}")
    folder = Path(folder)
    refuse_inputs(folder, reference.source_files)
    check_writable(folder, overwrite=overwrite, folder=True)

    stored, slope_s, intercept_s = quantise_int16(data)
    lo, hi = float(data.min()), float(data.max())
    window = (_ds((lo + hi) / 2), _ds(max(hi - lo, 1.0)))
    date, time = _now()
    version = _version()
    series_uid = generate_uid()
    texts = [series_description, derivation_description or ""]
    slices = data.shape[0]

    if reference.kind == "dicom":
        sources: Sequence[Any] = reference.header
        first = sources[0]
        default_description = f"Computed by invdiff {version} from series {first.get('SeriesInstanceUID', '?')}"
        referenced_series = _new_dataset(
            {
                "SeriesInstanceUID": first.get("SeriesInstanceUID", ""),
                "ReferencedInstanceSequence": [
                    _new_dataset({"ReferencedSOPClassUID": s.SOPClassUID, "ReferencedSOPInstanceUID": s.SOPInstanceUID})
                    for s in sources
                ],
            }
        )
        if series_number is None:
            source_number = first.get("SeriesNumber", None)
            series_number = (int(source_number) if source_number not in (None, "") else 0) + 1000
    else:
        default_description = (
            f"Computed by invdiff {version} from {reference.kind} file {reference.path.name} "
            f"(sha256 {reference.source_hash[:16]})"
        )
        planes = _plane_from_affine(reference)
        study_uid, frame_uid = generate_uid(), generate_uid()
        series_number = 1 if series_number is None else series_number

    datasets = []
    for k in range(slices):
        if reference.kind == "dicom":
            src = sources[k]
            ds = _derived_from_dicom(src)
            sop_class = str(src.SOPClassUID) if str(src.SOPClassUID) in _KEEP_SOP_CLASSES else _SC
            image_type = ["DERIVED", "SECONDARY", *list(src.get("ImageType", []))[2:]]
            ds.SourceImageSequence = [_source_reference(src)]
            ds.ReferencedSeriesSequence = [referenced_series]
            if "InstanceNumber" not in ds or ds.InstanceNumber in (None, ""):
                ds.InstanceNumber = k + 1
        else:
            sop_class = _SC
            image_type = ["DERIVED", "SECONDARY"]
            ds = _new_dataset(
                {
                    "PatientName": "",
                    "PatientID": "",
                    "PatientBirthDate": "",
                    "PatientSex": "",
                    "StudyInstanceUID": study_uid,
                    "StudyDate": date,
                    "StudyTime": time,
                    "ReferringPhysicianName": "",
                    "StudyID": "",
                    "AccessionNumber": "",
                    "Modality": "OT",
                    "FrameOfReferenceUID": frame_uid,
                    "PositionReferenceIndicator": "",
                    "InstanceNumber": k + 1,
                    "BurnedInAnnotation": "NO",
                    **planes[k],
                }
            )
        if sop_class == _SC:
            ds.ConversionType = "WSD"
            ds.SecondaryCaptureDeviceManufacturer = "invdiff"
            ds.SecondaryCaptureDeviceSoftwareVersions = version
        if "Laterality" not in ds and "ImageLaterality" not in ds:  # type 2C validators cannot decide; empty = unknown
            ds.Laterality = ""
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
        ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
        ds.ImageType = image_type
        ds.DerivationDescription = derivation_description or default_description
        ds.Manufacturer = "invdiff"
        ds.ManufacturerModelName = "invdiff"
        ds.SoftwareVersions = version
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if not (sop_class == _MR and slope_s == "1" and intercept_s == "0"):  # MR Image IOD has no rescale; CT/SC need it
            ds.RescaleIntercept, ds.RescaleSlope = intercept_s, slope_s
            if sop_class == _SC:
                ds.RescaleType = "US"
        ds.WindowCenter, ds.WindowWidth = window
        if any(not t.isascii() for t in texts):
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.add_new(0x7FE00010, "OW", stored[k].astype("<i2").tobytes())

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"INVDIFF_{version}"[:16]
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        datasets.append(ds)

    width = max(4, len(str(slices - 1)))
    names = [f"slice_{k:0{width}d}.dcm" for k in range(slices)]
    with atomic_dir(folder, overwrite=overwrite, allowed_suffixes=(".dcm",)) as tmp:
        for name, ds in zip(names, datasets, strict=True):
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
    return [folder / name for name in names]
