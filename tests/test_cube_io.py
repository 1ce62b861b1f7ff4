"""Cube IO round trips (NPY, MATLAB incl. v7.3/HDF5, TIFF, ENVI) with exact values, layouts and error paths.

Oracles from outside the project: the files are re-read with NumPy, SciPy ``loadmat``, tifffile and h5py directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invdiff.cube_io import load_cube, save_cube


def cube(dtype: type = np.float32, shape: tuple[int, int, int] = (5, 12, 9)) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".npy", ".mat", ".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_exact(tmp_path, suffix: str, dtype: type) -> None:
    x = cube(dtype)
    path = save_cube(torch.from_numpy(x), tmp_path / f"c{suffix}")
    back = load_cube(path)
    assert back.shape == (5, 12, 9)
    assert back.dtype == torch.from_numpy(x).dtype
    np.testing.assert_array_equal(back.numpy(), x)


def test_disk_conventions_read_by_foreign_readers(tmp_path) -> None:
    import tifffile
    from scipy.io import loadmat

    x = cube()
    save_cube(x, tmp_path / "c.npy")
    save_cube(x, tmp_path / "c.mat", variable="hsi")
    save_cube(x, tmp_path / "c.tif")
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), x)  # (bands, H, W)
    np.testing.assert_array_equal(loadmat(tmp_path / "c.mat")["hsi"], np.moveaxis(x, 0, -1))  # MATLAB (H, W, bands)
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        assert len(tif.pages) == 5  # one page per band
        np.testing.assert_array_equal(tif.asarray(), x)


def test_mat_written_by_matlab_users(tmp_path) -> None:
    from scipy.io import savemat

    x = cube(np.float64)
    savemat(tmp_path / "a.mat", {"ref": np.moveaxis(x, 0, -1), "other": np.zeros((3, 3))})
    np.testing.assert_array_equal(load_cube(tmp_path / "a.mat", variable="ref").numpy(), x)
    with pytest.raises(ValueError, match=r"holds 2 arrays \(other, ref\); pass variable="):
        load_cube(tmp_path / "a.mat")
    with pytest.raises(ValueError, match="variable 'nope' not in 'a.mat'"):
        load_cube(tmp_path / "a.mat", variable="nope")


def test_mat_v73_hdf5(tmp_path) -> None:
    h5py = pytest.importorskip("h5py")
    x = cube(np.float64)
    path = tmp_path / "v73.mat"
    # A MATLAB v7.3 file: HDF5 with a 512-byte user block holding the MAT header; MATLAB writes column-major,
    # so an (H, W, bands) variable appears to HDF5 as (bands, W, H).
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("cube", data=np.moveaxis(x, 0, -1).T)
    with open(path, "r+b") as f:
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    np.testing.assert_array_equal(load_cube(path).numpy(), x)


def test_npy_hwc_layout_and_layout_error(tmp_path) -> None:
    x = cube(shape=(31, 64, 64))
    np.save(tmp_path / "hwc.npy", np.moveaxis(x, 0, -1))  # (64, 64, 31)
    with pytest.raises(ValueError, match=r"got \(64, 64, 31\): did you mean layout='hwc'\?"):
        load_cube(tmp_path / "hwc.npy")
    np.testing.assert_array_equal(load_cube(tmp_path / "hwc.npy", layout="hwc").numpy(), x)
    # Cubes with more bands than rows need the check turned off explicitly.
    np.save(tmp_path / "many.npy", cube(shape=(40, 8, 8)))
    assert load_cube(tmp_path / "many.npy", check_layout=False).shape == (40, 8, 8)


def test_save_refuses_overwrite_and_is_atomic(tmp_path) -> None:
    path = save_cube(cube(), tmp_path / "c.npy")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        save_cube(cube() + 1, path)
    assert path.read_bytes() == before
    save_cube(cube() + 1, path, overwrite=True)
    np.testing.assert_array_equal(load_cube(path).numpy(), cube() + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]  # no temporary left behind


def test_save_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"got \(64, 64, 31\): pass a \(bands, H, W\) cube, e\.g\. cube\.permute\(2, 0, 1\)"):
        save_cube(np.zeros((64, 64, 31), np.float32), tmp_path / "c.npy")
    with pytest.raises(ValueError, match=r"cube must be \(bands, H, W\), got shape \(1, 5, 12, 9\)"):
        save_cube(cube()[None], tmp_path / "c.npy")
    with pytest.raises(TypeError, match="cube must be real"):
        save_cube(torch.zeros(2, 4, 4, dtype=torch.complex64), tmp_path / "c.npy")
    with pytest.raises(TypeError, match="cube must be a torch.Tensor or numpy.ndarray, got list"):
        save_cube([[[0.0]]], tmp_path / "c.npy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unsupported cube file suffix '\.png'"):
        save_cube(cube(), tmp_path / "c.png")
    with pytest.raises(ValueError, match="variable must be a MATLAB identifier"):
        save_cube(cube(), tmp_path / "c.mat", variable="2bad")
    with pytest.raises(ValueError, match="layout must be 'chw'"):
        save_cube(cube(), tmp_path / "c.npy", layout="whc")  # type: ignore[arg-type]


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cube(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"shape \(4, 4\); expected a 3-D cube"):
        load_cube(tmp_path / "flat.npy")


def test_integer_data_become_float32(tmp_path) -> None:
    x = (cube() * 1000).astype(np.uint16)
    np.save(tmp_path / "u.npy", x)
    back = load_cube(tmp_path / "u.npy")
    assert back.dtype == torch.float32
    np.testing.assert_array_equal(back.numpy(), x.astype(np.float32))


def test_envi_round_trip(tmp_path) -> None:
    pytest.importorskip("spectral")
    x = cube()
    path = save_cube(x, tmp_path / "c.hdr")
    assert (tmp_path / "c.img").is_file()
    np.testing.assert_array_equal(load_cube(path).numpy(), x)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        save_cube(x, path)
    save_cube(x * 2, path, overwrite=True)
    np.testing.assert_array_equal(load_cube(path).numpy(), x * 2)
