"""invdiff.pipelines.kspace_io: fastMRI-style HDF5, NPY and NIfTI k-space with masks.

Synthetic files in fastMRI layout are written with h5py into tmp_path; MONAI's FastMRIReader reads the same files
as an independent oracle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from invdiff.pipelines.kspace_io import (
    load_kspace,
    load_kspace_h5,
    load_kspace_nifti,
    load_kspace_npy,
    save_kspace_h5,
    save_kspace_npy,
)

S, C, H, W = 3, 4, 16, 12


def random_kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def column_mask(width: int = W) -> np.ndarray:
    mask = np.zeros(width, np.float32)
    mask[::3] = 1
    mask[width // 2 - 1 : width // 2 + 2] = 1
    return mask


def write_fastmri(path: Path, kspace: np.ndarray, *, mask: np.ndarray | None = None, recon: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if mask is not None:
            f.create_dataset("mask", data=mask)
        if recon:
            f.create_dataset("reconstruction_rss", data=np.abs(kspace).reshape(kspace.shape[0], -1)[:, :64].reshape(-1, 8, 8).astype(np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(b"<ismrmrdHeader><encoding/></ismrmrdHeader>"))
        f.attrs["max"] = np.float64(0.00123)
        f.attrs["norm"] = np.float64(0.045)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = "abc"
    return path


def test_fastmri_multicoil(tmp_path: Path) -> None:
    from monai.apps.reconstruction.fastmri_reader import FastMRIReader

    kspace, mask = random_kspace((S, C, H, W)), column_mask()
    path = write_fastmri(tmp_path / "file_brain.h5", kspace, mask=mask)
    data = load_kspace_h5(path)
    assert data.shape == (S, C, H, W) and data.kspace.dtype == np.complex64 and data.multicoil and data.kind == "h5"
    np.testing.assert_array_equal(data.kspace, kspace)
    assert data.mask is not None and data.mask.shape == (S, H, W) and data.mask.dtype == np.bool_
    np.testing.assert_array_equal(data.mask, np.broadcast_to(mask.astype(bool), (S, H, W)))
    assert data.attrs == {"max": 0.00123, "norm": 0.045, "acquisition": "CORPD_FBK", "patient_id": "abc"}
    assert data.reconstructions["reconstruction_rss"].shape == (S, 8, 8)
    assert data.header_xml is not None and data.header_xml.startswith("<ismrmrdHeader>")
    assert data.slices == (0, 1, 2) and data.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    reader = FastMRIReader()
    monai_kspace, meta = reader.get_data(reader.read(path))
    np.testing.assert_array_equal(data.kspace, monai_kspace)
    np.testing.assert_array_equal(data.mask[0, 0], np.asarray(meta["mask"]).reshape(-1).astype(bool))


def test_fastmri_singlecoil_and_slice_selection(tmp_path: Path) -> None:
    kspace = random_kspace((S, H, W), seed=1)
    per_slice = np.random.default_rng(2).random((S, H, W)) > 0.5
    path = write_fastmri(tmp_path / "file1000001.h5", kspace, mask=per_slice)
    data = load_kspace_h5(path)
    assert data.shape == (S, 1, H, W) and not data.multicoil
    np.testing.assert_array_equal(data.kspace[:, 0], kspace)
    part = load_kspace_h5(path, slices=[2, 0])
    np.testing.assert_array_equal(part.kspace[:, 0], kspace[[2, 0]])
    np.testing.assert_array_equal(part.mask, per_slice[[2, 0]])
    np.testing.assert_array_equal(part.reconstructions["reconstruction_rss"], data.reconstructions["reconstruction_rss"][[2, 0]])
    assert part.slices == (2, 0)
    assert load_kspace_h5(path, slices=slice(1, None)).slices == (1, 2)
    nomask = load_kspace_h5(write_fastmri(tmp_path / "train.h5", kspace, recon=False))
    assert nomask.mask is None and nomask.reconstructions == {}
    with pytest.raises(ValueError, match=r"slices must be indices in 0..2, got \[3\]"):
        load_kspace_h5(path, slices=[3])


def test_h5_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_kspace_h5(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="cannot read HDF5 file"):
        load_kspace_h5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"has no 'kspace' dataset \(found: \['image'\]\)"):
        load_kspace_h5(tmp_path / "nok.h5")
    with h5py.File(tmp_path / "rank.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match=r"expected \(slices, H, W\) or \(slices, coils, H, W\)"):
        load_kspace_h5(tmp_path / "rank.h5")
    kspace = random_kspace((S, C, H, W))
    write_fastmri(tmp_path / "badmask.h5", kspace, mask=column_mask(W + 1))
    with pytest.raises(ValueError, match=r"has shape \(13,\), which does not broadcast to k-space \(slices, H, W\) = \(3, 16, 12\)"):
        load_kspace_h5(tmp_path / "badmask.h5")
    write_fastmri(tmp_path / "weights.h5", kspace, mask=column_mask() * 0.5)
    with pytest.raises(ValueError, match="must be binary"):
        load_kspace_h5(tmp_path / "weights.h5")
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="expected complex values or a last axis of 2"):
        load_kspace_h5(tmp_path / "real.h5")


def test_npy(tmp_path: Path) -> None:
    kspace = random_kspace((S, C, H, W))
    np.save(tmp_path / "k.npy", kspace)
    mask2d = np.random.default_rng(3).random((H, W)) > 0.6
    np.save(tmp_path / "m.npy", mask2d)
    data = load_kspace_npy(tmp_path / "k.npy", tmp_path / "m.npy")
    np.testing.assert_array_equal(data.kspace, kspace)
    np.testing.assert_array_equal(data.mask, np.broadcast_to(mask2d, (S, H, W)))
    assert data.multicoil and data.kind == "npy" and len(data.source_files) == 2
    np.save(tmp_path / "ri.npy", np.stack([kspace.real, kspace.imag], axis=-1))  # real/imag as a last axis of 2
    np.testing.assert_array_equal(load_kspace_npy(tmp_path / "ri.npy").kspace, kspace)
    np.save(tmp_path / "k3.npy", kspace[0])
    assert load_kspace_npy(tmp_path / "k3.npy").shape == (C, 1, H, W)  # fastMRI convention: 3D = single-coil slices
    assert load_kspace_npy(tmp_path / "k3.npy", multicoil=True).shape == (1, C, H, W)
    np.save(tmp_path / "k2.npy", kspace[0, 0])
    assert load_kspace_npy(tmp_path / "k2.npy").shape == (1, 1, H, W)
    with pytest.raises(ValueError, match="multicoil=False"):
        load_kspace_npy(tmp_path / "k.npy", multicoil=False)
    np.save(tmp_path / "real.npy", kspace.real)
    with pytest.raises(ValueError, match="expected complex values or a last axis of 2"):
        load_kspace_npy(tmp_path / "real.npy")
    np.save(tmp_path / "k5.npy", kspace[None])
    with pytest.raises(ValueError, match=r"expected \(H, W\), \(S, H, W\) or \(S, C, H, W\)"):
        load_kspace_npy(tmp_path / "k5.npy")
    np.save(tmp_path / "m_bad.npy", np.ones((H + 1, W), bool))
    with pytest.raises(ValueError, match="does not broadcast to k-space"):
        load_kspace_npy(tmp_path / "k.npy", tmp_path / "m_bad.npy")
    with pytest.raises(FileNotFoundError, match="mask file"):
        load_kspace_npy(tmp_path / "k.npy", tmp_path / "missing.npy")


def test_nifti(tmp_path: Path) -> None:
    kspace = random_kspace((S, C, H, W))
    stored = kspace.transpose(3, 2, 0, 1)  # (W, H, S, C) as nibabel holds it
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "k.nii.gz")
    mask = np.random.default_rng(4).random((S, H, W)) > 0.5
    nib.save(nib.Nifti1Image(mask.T.astype(np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    data = load_kspace_nifti(tmp_path / "k.nii.gz", tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(data.kspace, kspace)
    np.testing.assert_array_equal(data.mask, mask)
    assert data.multicoil and data.kind == "nifti"
    pairs = np.stack([stored.real, stored.imag], axis=-1).astype(np.float32)  # (W, H, S, C, 2)
    nib.save(nib.Nifti1Image(pairs, np.eye(4)), tmp_path / "ri.nii")
    np.testing.assert_array_equal(load_kspace_nifti(tmp_path / "ri.nii").kspace, kspace)
    single = kspace[:, 0].transpose(2, 1, 0)  # (W, H, S)
    nib.save(nib.Nifti1Image(single, np.eye(4)), tmp_path / "s.nii")
    one = load_kspace_nifti(tmp_path / "s.nii")
    assert one.shape == (S, 1, H, W) and not one.multicoil
    np.testing.assert_array_equal(one.kspace[:, 0], kspace[:, 0])
    nib.save(nib.Nifti1Image(np.ones((W, H, S), np.float32), np.eye(4)), tmp_path / "real.nii")
    with pytest.raises(ValueError, match="is real with shape"):
        load_kspace_nifti(tmp_path / "real.nii")


def test_savers_round_trip_and_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kspace = random_kspace((S, C, H, W))
    mask = np.broadcast_to(column_mask().astype(bool), (S, H, W))
    out = save_kspace_h5(kspace, tmp_path / "sim.h5", mask=mask, attrs={"acquisition": "AXT2"})
    with h5py.File(out) as f:  # fastMRI layout: a (W,) column mask
        assert f["mask"].shape == (W,) and f["kspace"].shape == (S, C, H, W)
    back = load_kspace(out)
    np.testing.assert_array_equal(back.kspace, kspace)
    np.testing.assert_array_equal(back.mask, mask)
    assert back.attrs == {"acquisition": "AXT2"}
    single = save_kspace_h5(kspace[:, :1], tmp_path / "single.h5")
    with h5py.File(single) as f:
        assert f["kspace"].shape == (S, H, W)
    with pytest.raises(FileExistsError, match=r"sim\.h5 already exists; pass --overwrite"):
        save_kspace_h5(kspace, out)
    save_kspace_h5(kspace * 2, out, overwrite=True)
    np.testing.assert_array_equal(load_kspace_h5(out).kspace, kspace * 2)
    with pytest.raises(ValueError, match="would replace the input"):
        save_kspace_h5(kspace, out, overwrite=True, inputs=[out])
    with pytest.raises(ValueError, match=r"kspace must be complex \(S, C, H, W\)"):
        save_kspace_h5(kspace[0], tmp_path / "bad.h5")

    paths = save_kspace_npy(kspace, tmp_path / "k.npy", mask=mask, mask_path=tmp_path / "m.npy")
    again = load_kspace(*paths)
    np.testing.assert_array_equal(again.kspace, kspace)
    np.testing.assert_array_equal(again.mask, mask)
    with pytest.raises(ValueError, match="mask and mask_path must be given together"):
        save_kspace_npy(kspace, tmp_path / "k2.npy", mask=mask)
    with pytest.raises(ValueError, match="mask_path must be None for HDF5"):
        load_kspace(out, tmp_path / "m.npy")
    with pytest.raises(ValueError, match="unsupported k-space suffix"):
        load_kspace(tmp_path / "k.mat")

    def broken_save(handle: object, array: np.ndarray) -> None:
        raise OSError("disk full")

    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_kspace_npy(kspace, tmp_path / "n.npy", mask=mask, mask_path=tmp_path / "nm.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
