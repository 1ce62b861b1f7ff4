"""invdiff.pipelines.dicom_writer: derived DICOM series that validate (dciodvfy) and load back with their geometry.

Oracles: dicom3tools' ``dciodvfy`` (run when on PATH), pydicom, MONAI's PydicomReader, nibabel's affine.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as _nib_data
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from invdiff.pipelines.dicom_writer import quantise_int16, save_dicom_series
from invdiff.pipelines.io import Scan, load_scan

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
SERIES = PYDICOM_DATA / "dicomdirtests"
CT_SMALL = PYDICOM_DATA / "CT_small.dcm"
MR_SMALL = PYDICOM_DATA / "MR_small.dcm"
CT5N = SERIES / "98892001" / "CT5N"
MR700 = SERIES / "98892003" / "MR700"
ANATOMICAL = Path(_nib_data) / "anatomical.nii"
EXAMPLE4D = Path(_nib_data) / "example4d.nii.gz"
DCIODVFY = shutil.which("dciodvfy")


def _npy(tmp: Path) -> Path:
    np.save(tmp / "img.npy", np.random.default_rng(1).normal(size=(3, 12, 10)))
    return tmp / "img.npy"


def _png(tmp: Path) -> Path:
    Image.fromarray((np.arange(96).reshape(8, 12) * 600).astype(np.uint16)).save(tmp / "img.png")
    return tmp / "img.png"


# name -> (loader, is DICOM source)
REFERENCES: dict[str, Callable[[Path], Scan]] = {
    "ct_small": lambda tmp: load_scan(CT_SMALL),
    "mr_small": lambda tmp: load_scan(MR_SMALL),
    "ct5n_series": lambda tmp: load_scan(CT5N),
    "mr700_radial": lambda tmp: load_scan(MR700, allow_irregular=True),
    "anatomical_nii": lambda tmp: load_scan(ANATOMICAL),
    "example4d_oblique": lambda tmp: load_scan(EXAMPLE4D, volume_index=1),
    "npy": lambda tmp: load_scan(_npy(tmp)),
    "png": lambda tmp: load_scan(_png(tmp)),
}


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def transform(array: np.ndarray) -> np.ndarray:
    """A float result with a fractional part, as a reconstruction would give."""
    return array * 0.37 + 1.5


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_derived_series(tmp_path: Path, name: str) -> None:
    reference = REFERENCES[name](tmp_path)
    values = transform(reference.array)
    out = tmp_path / "derived"
    files = save_dicom_series(values, reference, out, series_description="invdiff test recon")
    assert files == sorted(out.iterdir()) and len(files) == reference.shape[0]
    datasets = [pydicom.dcmread(f) for f in files]
    from_dicom = reference.kind == "dicom"

    # UIDs: one new series, new instances; study / patient / frame of reference kept for a DICOM source.
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    sop_uids = [str(ds.SOPInstanceUID) for ds in datasets]
    assert len(series_uids) == 1 and len(set(sop_uids)) == len(files)
    for k, ds in enumerate(datasets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.preamble == b"\0" * 128
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and ds.DerivationDescription
        assert ds.SeriesDescription == "invdiff test recon"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds["PixelData"].VR == "OW" and ds["RescaleSlope"].VR == "DS"
        if from_dicom:
            src = reference.header[k]
            assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
            for key in ("StudyInstanceUID", "PatientName", "PatientID", "FrameOfReferenceUID", "InstanceNumber",
                        "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
                assert ds.get(key) == src.get(key), key
            assert ds.SOPClassUID == src.SOPClassUID  # CT and MR keep their IOD
            ref = ds.SourceImageSequence[0]
            assert (ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID) == (src.SOPInstanceUID, src.SOPClassUID)
            assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
            referenced = ds.ReferencedSeriesSequence[0]
            assert referenced.SeriesInstanceUID == src.SeriesInstanceUID
            assert [r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence] == [
                s.SOPInstanceUID for s in reference.header
            ]
            assert not any(elem.tag.is_private for elem in ds)
        else:
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.Modality == "OT"
            assert int(ds.InstanceNumber) == k + 1
            assert reference.source_hash[:16] in ds.DerivationDescription
    if not from_dicom:
        assert len({str(ds.StudyInstanceUID) for ds in datasets}) == 1
        assert len({str(ds.FrameOfReferenceUID) for ds in datasets}) == 1

    # Loads back with the same geometry and the values within one quantisation step.
    back = load_scan(out, allow_irregular=not reference.regular)
    step = back.rescale[0][0]
    assert np.abs(back.array - values).max() <= step
    assert step <= (values.max() - values.min()) / 65534 * (1 + 1e-6)
    if from_dicom:
        np.testing.assert_array_equal(back.affine, reference.affine)
        np.testing.assert_array_equal(back.slice_affines, reference.slice_affines)
    else:
        np.testing.assert_allclose(back.affine, reference.affine, atol=1e-9)


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not on PATH")
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_dciodvfy_reports_no_errors(tmp_path: Path, name: str) -> None:
    reference = REFERENCES[name](tmp_path)
    files = save_dicom_series(transform(reference.array), reference, tmp_path / "derived", series_description="invdiff")
    allowed: set[str] = set()
    if name == "mr700_radial":  # the source itself fails: StudyInstanceUID == FrameOfReferenceUID (both kept)
        allowed = set(dciodvfy_errors(reference.source_files[0]))
        assert any("FrameOfReferenceUID" in line for line in allowed)
    for f in files:
        errors = set(dciodvfy_errors(f)) - allowed
        assert not errors, f"{f.name}: {sorted(errors)}"


@pytest.mark.parametrize("name", ["ct5n_series", "example4d_oblique", "mr_small"])
def test_monai_reads_same_geometry(tmp_path: Path, name: str) -> None:
    from monai.transforms import LoadImage

    reference = REFERENCES[name](tmp_path)
    values = transform(reference.array)
    save_dicom_series(values, reference, tmp_path / "derived", series_description="invdiff test")
    load = LoadImage(reader="PydicomReader", image_only=True)
    derived = load(str(tmp_path / "derived"))
    affine = np.asarray(derived.affine)
    if reference.kind == "dicom":  # MONAI on the source and on the derived series agree
        source = load(str(reference.path))
        np.testing.assert_allclose(affine, np.asarray(source.affine), atol=1e-9)
    if derived.ndim == 3:  # MONAI's (i, j, k) array with the same RAS affine as ours
        np.testing.assert_allclose(affine, reference.affine, atol=1e-6)
        pixels = np.asarray(derived).transpose(2, 1, 0)
    else:  # a single slice: MONAI gives (i, j) with a unit k column
        np.testing.assert_allclose(affine[:, [0, 1, 3]], reference.affine[:, [0, 1, 3]], atol=1e-9)
        pixels = np.asarray(derived).T[None]
    step = float(pydicom.dcmread(next((tmp_path / "derived").iterdir())).RescaleSlope)
    assert np.abs(pixels - values).max() <= step


def test_integer_values_are_stored_exactly(tmp_path: Path) -> None:
    reference = load_scan(CT_SMALL)  # HU integers
    save_dicom_series(reference.array, reference, tmp_path / "ct", series_description="identity")
    ds = pydicom.dcmread(next((tmp_path / "ct").iterdir()))
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, 0)
    np.testing.assert_array_equal(load_scan(tmp_path / "ct").array, reference.array)


def test_quantise_int16() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(50.0, 300.0, size=(4, 9, 7))
    stored, slope_s, intercept_s = quantise_int16(data)
    assert len(slope_s) <= 16 and len(intercept_s) <= 16 and stored.dtype == np.int16
    slope, intercept = float(slope_s), float(intercept_s)
    assert np.abs(stored * slope + intercept - data).max() <= 0.5 * slope * (1 + 1e-6)
    assert stored.min() >= -32767 and stored.max() <= 32767
    constant, s, b = quantise_int16(np.full((2, 3), 0.3))
    assert (constant == 0).all() and (float(s), float(b)) == (1.0, 0.3)
    with pytest.raises(ValueError, match="cannot be stored in 16 bits"):
        quantise_int16(np.array([1e12, 1e12 + 1e-3]))


def test_non_ascii_description(tmp_path: Path) -> None:
    reference = load_scan(MR_SMALL)
    save_dicom_series(reference.array * 0.5, reference, tmp_path / "s", series_description="Rekonstruktion µ")
    ds = pydicom.dcmread(next((tmp_path / "s").iterdir()))
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.SeriesDescription == "Rekonstruktion µ"
    assert ds.PatientName == pydicom.dcmread(MR_SMALL).PatientName


def test_writer_errors(tmp_path: Path) -> None:
    reference = load_scan(CT5N)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"array has shape \(4, 16, 16\)"):
        save_dicom_series(reference.array[:4], reference, out, series_description="x")
    with pytest.raises(TypeError, match="array must be real"):
        save_dicom_series(reference.array + 1j, reference, out, series_description="x")
    with pytest.raises(ValueError, match="series_description must be 1..64"):
        save_dicom_series(reference.array, reference, out, series_description="x" * 65)
    with pytest.raises(ValueError, match="without backslash"):
        save_dicom_series(reference.array, reference, out, series_description="a\\b")
    with pytest.raises(ValueError, match="series_number must be a non-negative int"):
        save_dicom_series(reference.array, reference, out, series_description="x", series_number=-1)
    with pytest.raises(ValueError, match="would replace the input"):
        save_dicom_series(reference.array, reference, CT5N, series_description="x", overwrite=True)
    sheared = np.array([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.ones((4, 5, 2), np.float32), sheared), tmp_path / "shear.nii")
    shear = load_scan(tmp_path / "shear.nii")
    with pytest.raises(ValueError, match="shear between its i and j axes"):
        save_dicom_series(shear.array, shear, out, series_description="x")
    assert not out.exists()


def test_overwrite_policy_and_atomicity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = load_scan(CT5N)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is free
    first = save_dicom_series(reference.array, reference, out, series_description="first")
    old = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in first}
    with pytest.raises(FileExistsError, match=r"out already exists; pass --overwrite") as info:
        save_dicom_series(reference.array, reference, out, series_description="second")
    assert "\n" not in str(info.value)

    calls = {"n": 0}
    real_write = pydicom.dcmwrite

    def failing_write(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pydicom, "dcmwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_dicom_series(reference.array, reference, tmp_path / "new", series_description="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder, no temporary left
    calls["n"] = 0
    with pytest.raises(OSError, match="disk full"):
        save_dicom_series(reference.array, reference, out, series_description="x", overwrite=True)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == old
    monkeypatch.setattr(pydicom, "dcmwrite", real_write)

    second = save_dicom_series(reference.array + 1, reference, out, series_description="second", overwrite=True)
    assert [p.name for p in second] == list(old) and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert pydicom.dcmread(second[0]).SeriesDescription == "second"
    (out / "keep.txt").write_text("not ours")
    with pytest.raises(ValueError, match="refusing to replace output folder"):
        save_dicom_series(reference.array, reference, out, series_description="x", overwrite=True)


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not on PATH")
def test_dciodvfy_catches_a_broken_file(tmp_path: Path) -> None:
    """Negative control: the validator flags a derived file once a required attribute is removed."""
    reference = load_scan(CT_SMALL)
    (path,) = save_dicom_series(transform(reference.array), reference, tmp_path / "s", series_description="x")
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    del ds.RescaleSlope  # type 1 in the CT Image module
    ds.save_as(tmp_path / "broken.dcm")
    assert any("RescaleSlope" in line for line in dciodvfy_errors(tmp_path / "broken.dcm"))
