"""invdiff.pipelines.io: loading scans with geometry, NIfTI/NPY writing, atomic writes and the overwrite policy.

Real files: pydicom's CT_small.dcm, MR_small*.dcm and dicomdirtests series; nibabel's anatomical.nii and
example4d.nii.gz. Oracles: pydicom's modality LUT, nibabel's affine and data, MONAI's PydicomReader.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from nibabel.testing import data_path as _nib_data
from PIL import Image
from pydicom.pixels import apply_modality_lut

from invdiff.pipelines import atomic
from invdiff.pipelines.io import LPS_TO_RAS, load_scan, save_nifti, save_npy, save_scan

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
NIB_DATA = Path(_nib_data)
CT_SMALL = PYDICOM_DATA / "CT_small.dcm"
MR_SMALL = PYDICOM_DATA / "MR_small.dcm"
SERIES = PYDICOM_DATA / "dicomdirtests"
CT5N = SERIES / "98892001" / "CT5N"  # 5 parallel CT slices, 2.5 mm, InstanceNumber decreasing along the normal
CT2 = SERIES / "77654033" / "CT2"  # 4 parallel slices with a 202 mm gap
MR700 = SERIES / "98892003" / "MR700"  # 7 radial slices: orientation rotates from slice to slice
MR2 = SERIES / "98892003" / "MR2"  # 3 series in one folder
ANATOMICAL = NIB_DATA / "anatomical.nii"
EXAMPLE4D = NIB_DATA / "example4d.nii.gz"


def sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def lps_affine(ds: pydicom.Dataset, step: np.ndarray) -> np.ndarray:
    """The DICOM standard's C.7.6.2.1.1 voxel-to-patient matrix, written from the tags."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2] = iop[:3] * dc, iop[3:] * dr, step
    out[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return out


# ---------------------------------------------------------------------------------------------------- DICOM in


def test_ct_small_rescaled_geometry_and_hash() -> None:
    scan = load_scan(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    assert scan.kind == "dicom" and scan.shape == (1, 128, 128) and scan.array.dtype == np.float32
    np.testing.assert_array_equal(scan.array[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert scan.rescale == ((1.0, -1024.0),)
    assert (scan.array.min(), scan.array.max()) == (-896.0, 1167.0)  # the HU range MONAI reports too
    step = np.cross(*np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))) * float(ds.SliceThickness)
    np.testing.assert_allclose(scan.affine, LPS_TO_RAS @ lps_affine(ds, step), atol=0)
    assert scan.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert scan.source_hash == sha256([CT_SMALL]) and scan.source_files == (CT_SMALL,)
    assert scan.header[0].SOPInstanceUID == ds.SOPInstanceUID and "PixelData" not in scan.header[0]
    assert scan.regular and scan.volume_index is None


@pytest.mark.parametrize("variant", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"])
def test_mr_small_encodings_agree(variant: str) -> None:
    ref = load_scan(MR_SMALL)
    ds = pydicom.dcmread(MR_SMALL)
    np.testing.assert_array_equal(ref.array[0], ds.pixel_array.astype(np.float32))  # no rescale tags: stored values
    other = load_scan(PYDICOM_DATA / variant)
    np.testing.assert_array_equal(other.array, ref.array)
    np.testing.assert_array_equal(other.affine, ref.affine)


def test_single_dicom_file_without_suffix(tmp_path: Path) -> None:
    src = sorted(MR700.iterdir())[0]
    copy = tmp_path / "IM0001"
    shutil.copyfile(src, copy)
    scan = load_scan(copy)
    assert scan.kind == "dicom" and scan.shape == (1, 16, 16)


def test_series_sorted_along_normal_matches_monai() -> None:
    from monai.transforms import LoadImage

    scan = load_scan(CT5N)
    datasets = [pydicom.dcmread(p) for p in sorted(CT5N.iterdir())]
    assert scan.shape == (5, 16, 16) and scan.regular
    assert [int(ds.InstanceNumber) for ds in scan.header] == [6, 7, 8, 9, 10]  # the scanner's order (descending z)
    z = [float(ds.ImagePositionPatient[2]) for ds in scan.header]
    assert all(a > b for a, b in zip(z, z[1:], strict=False))
    for k, ds in enumerate(scan.header):  # the affine predicts every slice's position from the tags
        np.testing.assert_allclose((scan.affine_lps @ [0, 0, k, 1])[:3], np.asarray(ds.ImagePositionPatient, float), atol=1e-4)
        np.testing.assert_allclose(scan.slice_affines[k], LPS_TO_RAS @ lps_affine(ds, scan.affine_lps[:3, 2]), atol=1e-9)
    assert scan.spacing == pytest.approx((0.488281, 0.488281, 2.5))
    assert scan.source_hash == sha256([p for p in CT5N.iterdir()]) and len(scan.source_files) == len(datasets)
    monai = LoadImage(reader="PydicomReader", image_only=True)(str(CT5N))
    np.testing.assert_allclose(np.asarray(monai.affine), scan.affine, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(monai).transpose(2, 1, 0), scan.array)


def test_series_order_ignores_file_names_and_follows_positions(tmp_path: Path) -> None:
    files = sorted(CT5N.iterdir())
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = [f"x{i}" for i in range(len(files))]
    random.Random(0).shuffle(names)
    for src, name in zip(files, names, strict=True):
        shutil.copyfile(src, shuffled / name)
    (shuffled / "notes.txt").write_text("not DICOM")  # skipped
    ref = load_scan(CT5N)
    again = load_scan(shuffled)
    np.testing.assert_array_equal(again.array, ref.array)
    np.testing.assert_array_equal(again.affine, ref.affine)
    # Renumber so InstanceNumber no longer runs against the normal: the order becomes ascending along it.
    renumbered = tmp_path / "renumbered"
    renumbered.mkdir()
    for i, src in enumerate(files):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = 1 if i % 2 else 2 + i
        ds.save_as(renumbered / src.name)
    up = load_scan(renumbered)
    np.testing.assert_array_equal(up.array, ref.array[::-1])
    assert up.affine_lps[2, 2] == pytest.approx(2.5) and ref.affine_lps[2, 2] == pytest.approx(-2.5)


def test_irregular_series_refused_then_loaded_slice_by_slice() -> None:
    with pytest.raises(ValueError, match="not parallel.*allow_irregular=True"):
        load_scan(MR700)
    with pytest.raises(ValueError, match="not evenly spaced"):
        load_scan(CT2)
    radial = load_scan(MR700, allow_irregular=True)
    assert not radial.regular and radial.shape == (7, 16, 16)
    assert [int(ds.InstanceNumber) for ds in radial.header] == list(range(1, 8))
    for k, ds in enumerate(radial.header):
        np.testing.assert_allclose(radial.slice_affines[k][:3, 3], (LPS_TO_RAS[:3, :3] @ np.asarray(ds.ImagePositionPatient, float)))
        iop = np.asarray(ds.ImageOrientationPatient, float)
        np.testing.assert_allclose(radial.slice_affines[k][:3, 0], LPS_TO_RAS[:3, :3] @ iop[:3] * float(ds.PixelSpacing[1]))
    gap = load_scan(CT2, allow_irregular=True)
    z = [float(ds.ImagePositionPatient[2]) for ds in gap.header]
    assert z == sorted(z)


def test_dicom_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scan(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no DICOM files"):
        load_scan(empty)
    (empty / "study").mkdir()
    with pytest.raises(ValueError, match="pass the series folder itself"):
        load_scan(empty)
    with pytest.raises(ValueError, match="mixes 3 DICOM series"):
        load_scan(MR2)
    with pytest.raises(ValueError, match="no pixel data"):
        load_scan(PYDICOM_DATA / "rtplan.dcm")
    with pytest.raises(ValueError, match="multi-frame"):
        load_scan(PYDICOM_DATA / "rtdose.dcm")
    with pytest.raises(ValueError, match="SamplesPerPixel=3"):
        load_scan(PYDICOM_DATA / "SC_rgb_small_odd.dcm")
    ds = pydicom.dcmread(CT_SMALL)
    ds.PixelData = np.zeros((128, 128), np.int16).tobytes()
    ds.save_as(tmp_path / "blank.dcm")
    with pytest.raises(ValueError, match="blank pixel data"):
        load_scan(tmp_path / "blank.dcm")
    real_blank = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "decimal_rescale.dcm"
    if real_blank.exists():
        with pytest.raises(ValueError, match="blank pixel data"):
            load_scan(real_blank)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8not really")
    with pytest.raises(ValueError, match="unsupported input suffix '.jpg'"):
        load_scan(tmp_path / "photo.jpg")
    (tmp_path / "fake.dcm").write_bytes(b"hello")
    with pytest.raises(ValueError, match="is not a DICOM file"):
        load_scan(tmp_path / "fake.dcm")


# ---------------------------------------------------------------------------------------- NIfTI, PNG, NPY in


def test_nifti_3d_and_4d() -> None:
    img = nib.load(ANATOMICAL)
    scan = load_scan(ANATOMICAL)
    assert scan.kind == "nifti" and scan.shape == (25, 41, 33)
    np.testing.assert_array_equal(scan.array, np.asarray(img.get_fdata(), np.float32).transpose(2, 1, 0))
    np.testing.assert_array_equal(scan.affine, img.affine)
    assert scan.spacing == (2.0, 2.0, 2.0) and scan.rescale is None
    img4 = nib.load(EXAMPLE4D)
    with pytest.raises(ValueError, match="4D with 2 volumes; pass volume_index=0..1"):
        load_scan(EXAMPLE4D)
    vol = load_scan(EXAMPLE4D, volume_index=1)
    np.testing.assert_array_equal(vol.array, np.asarray(img4.dataobj[..., 1], np.float32).transpose(2, 1, 0))
    np.testing.assert_array_equal(vol.affine, img4.affine)
    assert vol.volume_index == 1
    with pytest.raises(ValueError, match="volume_index must be in 0..1"):
        load_scan(EXAMPLE4D, volume_index=2)
    with pytest.raises(ValueError, match="volume_index applies to 4D NIfTI only"):
        load_scan(ANATOMICAL, volume_index=0)
    with pytest.raises(TypeError, match="volume_index must be an int"):
        load_scan(EXAMPLE4D, volume_index=1.0)  # type: ignore[arg-type]


def test_nifti_2d_and_scaled(tmp_path: Path) -> None:
    data = np.arange(35, dtype=np.int16).reshape(5, 7)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.25, 1.0, 1.0]))
    img.header.set_slope_inter(2.0, -3.0)
    nib.save(img, tmp_path / "flat.nii.gz")
    scan = load_scan(tmp_path / "flat.nii.gz")
    assert scan.shape == (1, 7, 5) and scan.rescale == ((2.0, -3.0),)
    np.testing.assert_array_equal(scan.array[0], (2.0 * data - 3.0).T)
    assert scan.spacing == (0.5, 0.25, 1.0)


def test_png_and_npy(tmp_path: Path) -> None:
    gray16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    gray8 = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    for name, expected in (("g16.png", gray16), ("g8.png", gray8)):
        scan = load_scan(tmp_path / name)
        assert scan.kind == "png" and scan.shape == (1, 12, 10)
        np.testing.assert_array_equal(scan.array[0], expected.astype(np.float32))
        np.testing.assert_array_equal(scan.affine, np.eye(4))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'; expected a grayscale PNG"):
        load_scan(tmp_path / "rgb.png")
    volume = np.random.default_rng(0).normal(size=(3, 6, 5))
    np.save(tmp_path / "v.npy", volume)
    np.save(tmp_path / "i.npy", volume[0])
    np.testing.assert_array_equal(load_scan(tmp_path / "v.npy").array, volume.astype(np.float32))
    assert load_scan(tmp_path / "i.npy").shape == (1, 6, 5)
    np.save(tmp_path / "c.npy", volume.astype(np.complex64))
    with pytest.raises(ValueError, match="expected a real numeric array"):
        load_scan(tmp_path / "c.npy")
    np.save(tmp_path / "4d.npy", volume[None])
    with pytest.raises(ValueError, match=r"expected \(H, W\) or \(S, H, W\)"):
        load_scan(tmp_path / "4d.npy")


# ------------------------------------------------------------------------------------------- NIfTI/NPY out


@pytest.mark.parametrize(("source", "volume_index"), [(ANATOMICAL, None), (EXAMPLE4D, 0)])
def test_save_nifti_keeps_affine_and_header_exactly(tmp_path: Path, source: Path, volume_index: int | None) -> None:
    scan = load_scan(source, volume_index=volume_index)
    out = tmp_path / "recon.nii.gz"
    values = scan.array * 0.5 + 0.25
    assert save_nifti(values, scan, out) == out
    img, original = nib.load(out), nib.load(source)
    np.testing.assert_array_equal(img.affine, original.affine)
    np.testing.assert_array_equal(img.get_qform(), original.get_qform())
    for key in ("sform_code", "qform_code", "xyzt_units", "pixdim"):
        np.testing.assert_array_equal(img.header[key][:4] if key == "pixdim" else img.header[key], original.header[key][:4] if key == "pixdim" else original.header[key])
    assert img.get_data_dtype().type is np.float32 and img.header.get_slope_inter() == (None, None)  # byte order kept
    np.testing.assert_array_equal(np.asarray(img.dataobj), values.transpose(2, 1, 0))
    back = load_scan(out)
    np.testing.assert_array_equal(back.affine, scan.affine)
    np.testing.assert_array_equal(back.array, values)


def test_save_nifti_2d_and_from_dicom(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((5, 7), np.float32) * np.arange(7), np.eye(4)), tmp_path / "flat.nii")
    flat = load_scan(tmp_path / "flat.nii")
    save_nifti(flat.array[0], flat, tmp_path / "flat_out.nii")
    assert nib.load(tmp_path / "flat_out.nii").shape == (5, 7)
    series = load_scan(CT5N)
    save_nifti(series.array, series, tmp_path / "ct.nii.gz")
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1
    np.testing.assert_allclose(img.affine, series.affine, atol=1e-4)  # NIfTI-1 stores float32
    np.testing.assert_array_equal(load_scan(tmp_path / "ct.nii.gz").array, series.array)
    npy = save_npy(torch.from_numpy(series.array.copy()), series, tmp_path / "ct.npy")  # tensors are accepted
    np.testing.assert_array_equal(np.load(npy), series.array)


def test_save_errors_and_overwrite_policy(tmp_path: Path) -> None:
    scan = load_scan(ANATOMICAL)
    out = tmp_path / "a.nii.gz"
    with pytest.raises(ValueError, match="must end with .nii or .nii.gz"):
        save_nifti(scan.array, scan, tmp_path / "a.img")
    with pytest.raises(ValueError, match=r"array has shape \(2, 41, 33\)"):
        save_nifti(scan.array[:2], scan, out)
    with pytest.raises(TypeError, match="array must be real"):
        save_nifti(scan.array.astype(np.complex64), scan, out)
    bad = scan.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite values"):
        save_nifti(bad, scan, out)
    copy = tmp_path / "anatomical.nii"
    shutil.copyfile(ANATOMICAL, copy)
    with pytest.raises(ValueError, match="would replace the input"):
        save_nifti(scan.array, load_scan(copy), copy, overwrite=True)
    with pytest.raises(ValueError, match="irregular DICOM series"):
        radial = load_scan(MR700, allow_irregular=True)
        save_nifti(radial.array, radial, tmp_path / "radial.nii.gz")
    with pytest.raises(NotADirectoryError, match="parent folder"):
        save_nifti(scan.array, scan, tmp_path / "nope" / "a.nii.gz")
    save_nifti(scan.array, scan, out)
    first = out.read_bytes()
    with pytest.raises(FileExistsError, match=r"a\.nii\.gz already exists; pass --overwrite") as info:
        save_nifti(scan.array * 2, scan, out)
    assert "\n" not in str(info.value) and out.read_bytes() == first
    save_nifti(scan.array * 2, scan, out, overwrite=True)
    np.testing.assert_array_equal(load_scan(out).array, scan.array * 2)
    with pytest.raises(ValueError, match="cannot write scans as '.png'"):
        save_scan(scan.array, scan, tmp_path / "x.png")
    assert save_scan(scan.array, scan, tmp_path / "x.npy") == [tmp_path / "x.npy"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = load_scan(ANATOMICAL)

    def broken_save(img: nib.Nifti1Image, filename: str) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(scan.array, scan, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []
    # Replacing an existing output fails the same way: the old file survives intact.
    (tmp_path / "out.nii.gz").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        save_nifti(scan.array, scan, tmp_path / "out.nii.gz", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"] and (tmp_path / "out.nii.gz").read_bytes() == b"old"


def test_inputs_unchanged_after_read_write_cycle(tmp_path: Path) -> None:
    series = tmp_path / "series"
    shutil.copytree(CT5N, series)
    shutil.copyfile(ANATOMICAL, tmp_path / "anat.nii")
    inputs = sorted(series.iterdir()) + [tmp_path / "anat.nii"]
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in inputs}
    for src in (series, tmp_path / "anat.nii"):
        scan = load_scan(src)
        save_scan(scan.array + 1, scan, tmp_path / f"{src.stem}.nii.gz")
        save_scan(scan.array + 1, scan, tmp_path / f"{src.stem}_dicom")
    after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in inputs}
    assert after == before
    assert sorted(p.name for p in series.iterdir()) == sorted(p.name for p in CT5N.iterdir())


def test_atomic_path_contract(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="did not create"), atomic.atomic_path(target):
        pass
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("f.txt") and tmp.name.startswith(".")
        tmp.write_text("one")
    with pytest.raises(IsADirectoryError, match="is an existing folder"):
        atomic.check_writable(tmp_path, overwrite=True)
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        atomic.check_writable(target, overwrite="yes")  # type: ignore[arg-type]
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        atomic.check_writable(target, overwrite=True, folder=True)
    assert target.read_text() == "one"
