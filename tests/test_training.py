"""Training: config parsing, the MONAI data module on real NIfTI/PNG/NPY/DICOM files, a short Lightning run that
lowers the loss, exports a checkpoint that loads bit-exactly, and resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from invdiff.priors import load_prior
from invdiff.training import TrainConfig, load_config, parse_overrides, train
from invdiff.training.brain_data import locate_package_file, preprocess_slice

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


def anatomical() -> np.ndarray:
    return np.asarray(nib.load(str(locate_package_file("nibabel", "tests/data/anatomical.nii"))).dataobj, np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One of each: a NIfTI volume, a PNG slice, an NPY slice, a DICOM series folder (real MR data)."""
    import pydicom.data

    root = tmp_path_factory.mktemp("data")
    vol = anatomical()
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0])), root / "anat.nii.gz")
    png = np.round(255 * vol[:, :, 12] / vol.max()).astype(np.uint8)
    Image.fromarray(png).save(root / "slice.png")
    np.save(root / "slice.npy", vol[:, :, 14])
    mr700 = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests/98892003/MR700"
    shutil.copytree(mr700, root / "series" / "MR700")
    return root


def tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=str(data), output_dir=str(out), image_size=16, batch_size=4, network=TINY_NET, steps=30,
                lr=2e-3, val_every=10, sample_every=15, sample_steps=3, final_sample_steps=3, checkpoint_every=10,
                export_every=15, progress_bar=False, log_every=10, min_foreground=0.2, threads=1)
    base.update(kw)
    return TrainConfig(**base)


# ---- config ---------------------------------------------------------------------------------------
def test_load_config_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: somewhere\nsteps: 10\nnetwork:\n  channels: [8, 16]\n")
    cfg = load_config(path, ["steps=20", "network.num_res_blocks=2", "slice_axes=[0,1]", "flips=false"])
    assert cfg.steps == 20 and cfg.slice_axes == (0, 1) and cfg.flips is False
    assert cfg.network == {"channels": [8, 16], "num_res_blocks": 2}
    assert cfg.network_config()["in_channels"] == 1 and cfg.x_shape() == (1, 64, 64)
    json_path = tmp_path / "c.json"
    json_path.write_text('{"data": "x", "spatial_dims": 3, "image_size": 32, "channels": 2}')
    assert load_config(json_path).x_shape() == (2, 32, 32, 32)


def test_shipped_example_config_is_valid() -> None:
    cfg = load_config(REPO / "examples" / "train_brain_prior.yaml")
    assert cfg.data == "mni152-t1" and cfg.image_size == 64 and cfg.slice_axes == (0, 1, 2)
    assert cfg.export_stem == Path("invdiff/priors/shipped/brain_mri_64")


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data=x", "stepz=3"], r"unknown key\(s\) \['stepz'\]"),
        (["steps=3"], "'data' is required"),
        (["data=x", "steps=0"], r"steps must be an integer >= 1, got 0"),
        (["data=x", "channels=3"], "channels must be 1 or 2, got 3"),
        (["data=x", "ema_decay=1.0"], r"ema_decay must be in \[0, 1\)"),
        (["data=x", "precision=fp8"], "precision must be one of"),
        (["data=x", "network.in_channels=2"], "network.in_channels is set from the data options"),
        (["data=x", "slice_axes=[3]"], "slice_axes must be axes in"),
        (["data=x", "spatial_dims=3", "zoom=0"], r"zoom must be a number in \(0, 4\], got 0"),
        (["data=x", "zoom=0.5"], r"spatial_dims must be 3 when zoom \(0.5\) is set"),
        (["data=x", "spatial_dims=3", "patches_per_volume=0"], r"patches_per_volume must be an integer >= 1, got 0"),
        (["data"], "must look like key=value"),
    ],
)
def test_config_errors(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(bad)


def test_parse_overrides_nested() -> None:
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]"]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2]}


# ---- data ------------------------------------------------------------------------------------------
def test_preprocess_slice_pads_resizes_and_scales() -> None:
    img = np.zeros((8, 4), np.float32)
    img[:, :] = 3.0  # 8 x 4 -> zero-padded to 8 x 8 (two columns each side) -> area-averaged to 4 x 4
    out = preprocess_slice(img, 4)
    np.testing.assert_array_equal(out, np.tile(np.array([0, 1, 1, 0], np.float32), (4, 1)))
    ramp = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    ref = np.percentile(ramp[ramp > 0.05 * 100], 99.5)  # foreground: above 5 % of the maximum
    np.testing.assert_allclose(preprocess_slice(ramp, 10), np.clip(ramp / ref, 0, 1), rtol=1e-5)
    with pytest.raises(ValueError, match=r"img must be a 2D \(H, W\) array, got shape \(2, 2, 2\)"):
        preprocess_slice(np.zeros((2, 2, 2)), 4)
    with pytest.raises(ValueError, match="size must be an integer >= 2, got 1"):
        preprocess_slice(img, 1)


def test_shipped_heldout_slices_match_their_recipe() -> None:
    from invdiff.training.brain_data import heldout_slices

    pytest.importorskip("dipy")  # the held-out source files ship in the dipy and nibabel wheels
    for size in (64, 128):
        for name, img in heldout_slices(size).items():
            stored = np.load(REPO / "invdiff" / "data" / f"{name}_{size}.npy")
            assert stored.shape == (size, size) and stored.dtype == np.float32
            np.testing.assert_array_equal(stored, img)


def test_locate_package_file_errors() -> None:
    with pytest.raises(FileNotFoundError, match="package 'no_such_pkg_xyz' is not installed"):
        locate_package_file("no_such_pkg_xyz", "a.nii")
    with pytest.raises(FileNotFoundError, match="nibabel is installed but 'missing.nii' is missing"):
        locate_package_file("nibabel", "missing.nii")


def test_discover_and_read_every_format(data_dir: Path) -> None:
    from invdiff.training.data import discover, load_image, prepare_items

    items = discover(str(data_dir))
    assert [p.name for p in items] == ["anat.nii.gz", "slice.npy", "slice.png", "MR700"]
    cfg = tiny_config(data_dir, data_dir / "unused")
    vol = anatomical()
    # NIfTI: axial slices with enough foreground, each transposed/flipped, padded, resized, percentile-scaled
    nifti = prepare_items(items[:1], cfg)
    kept = [k for k in range(vol.shape[2]) if np.mean(vol[:, :, k] > 0.05 * vol.max()) >= cfg.min_foreground]
    assert len(nifti) == len(kept) > 5
    np.testing.assert_allclose(nifti[0][0], preprocess_slice(np.flipud(vol[:, :, kept[0]].T), 16), atol=1e-6)
    # NPY and PNG: 2D images as stored
    np.testing.assert_allclose(prepare_items(items[1:2], cfg)[0][0], preprocess_slice(vol[:, :, 14], 16), atol=1e-6)
    png = np.asarray(Image.open(data_dir / "slice.png"), dtype=np.float32)
    np.testing.assert_allclose(prepare_items(items[2:3], cfg)[0][0], preprocess_slice(png, 16), atol=1e-6)
    # DICOM series folder: pydicom's MR700 is 7 slices of 16 x 16, read as one volume reoriented to RAS
    arr, is_volume = load_image(items[3])
    assert is_volume and sorted(arr.shape[1:]) == [7, 16, 16]
    dicom = prepare_items(items[3:], cfg)
    assert 1 <= len(dicom) <= arr.shape[3]
    for arr in nifti + dicom:
        assert arr.shape == (1, 16, 16) and arr.dtype == np.float32
        assert arr.min() >= 0 and arr.max() == 1.0


def test_discover_errors(tmp_path: Path) -> None:
    from invdiff.training.data import discover

    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no NIfTI, PNG/JPEG, NPY or DICOM files found"):
        discover(str(tmp_path))


def test_datamodule_batches_in_prior_space(data_dir: Path) -> None:
    from invdiff.training.data import DiffusionDataModule

    dm = DiffusionDataModule(tiny_config(data_dir, data_dir / "unused", affine=True, elastic=True))
    dm.setup("fit")
    assert len(dm.val_items) == round(0.1 * (len(dm.train_items) + len(dm.val_items)))
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.max() > 0.5


def test_datamodule_3d_patches(data_dir: Path) -> None:
    from invdiff.training.data import DiffusionDataModule

    cfg = tiny_config(data_dir / "anat.nii.gz", data_dir / "unused", spatial_dims=3, image_size=16, batch_size=2,
                      val_fraction=0.0)
    dm = DiffusionDataModule(cfg)
    dm.setup("fit")
    (volume,) = dm.train_items
    assert volume.shape == (1, 33, 41, 25) and volume.max() == 1.0  # whole volume, percentile-scaled
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (1, 1, 16, 16, 16) and batch.min() >= -1 and batch.max() <= 1


def test_datamodule_3d_zoom_and_patches_per_volume(data_dir: Path) -> None:
    from monai.transforms import Zoom

    from invdiff.training.brain_data import percentile_scale
    from invdiff.training.data import DiffusionDataModule, load_image

    cfg = tiny_config(data_dir / "anat.nii.gz", data_dir / "unused", spatial_dims=3, image_size=8, batch_size=3,
                      val_fraction=0.0, zoom=0.5, patches_per_volume=5)
    dm = DiffusionDataModule(cfg)
    dm.setup("fit")
    assert len(dm.train_items) == 5 and all(item is dm.train_items[0] for item in dm.train_items)  # shared, not copied
    volume = dm.train_items[0]
    assert volume.shape == (1, 16, 20, 12)  # 33 x 41 x 25 halved (MONAI Zoom rounds down)
    raw, _ = load_image(data_dir / "anat.nii.gz")
    expected = percentile_scale(torch.as_tensor(Zoom(0.5, mode="area", keep_size=False)(raw)).float().clamp(min=0))
    np.testing.assert_allclose(volume, expected.numpy(), atol=1e-6)  # resampled first, then scaled as a whole
    batches = list(dm.train_dataloader())
    assert [b.shape[0] for b in batches] == [3] and batches[0].shape[1:] == (1, 8, 8, 8)  # last partial batch dropped
    assert not torch.equal(batches[0][0], batches[0][1])  # each repeat gets its own random crop


def test_complex_npy_gives_two_channels(tmp_path: Path) -> None:
    from invdiff.training.data import DiffusionDataModule

    img = anatomical()[:, :, 12]
    phase = np.exp(1j * np.linspace(0, np.pi, img.size).reshape(img.shape))
    np.save(tmp_path / "complex.npy", (img * phase).astype(np.complex64))
    dm = DiffusionDataModule(tiny_config(tmp_path, tmp_path / "unused", channels=2, val_fraction=0.0))
    dm.setup("fit")
    (item,) = dm.train_items
    assert item.shape == (2, 16, 16)
    assert dm.normalisation.offset == 0.0  # linear map: complex data stay complex-linear
    with pytest.raises(ValueError, match="channels=2 needs complex NPY data"):
        from invdiff.training.data import load_image

        load_image(locate_package_file("nibabel", "tests/data/anatomical.nii"), channels=2)


# ---- a short Lightning run ---------------------------------------------------------------------------
def test_training_lowers_loss_exports_and_resumes(data_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from invdiff.training.data import DiffusionDataModule
    from invdiff.training.module import DiffusionPriorModule

    out = tmp_path / "run"
    cfg = tiny_config(data_dir, out)
    weights = train(cfg)
    assert weights == out / "prior.safetensors"
    for name in ("prior.json", "prior_samples.png", "config.json", "checkpoints/last.ckpt", "samples/step_0000015.png"):
        assert (out / name).is_file(), name

    # the exported prior is the EMA network of the last Lightning checkpoint, bit for bit
    prior = load_prior(weights)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 30
    ema = {k[len("ema."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")}
    assert ema.keys() == prior.network.state_dict().keys()
    assert all(torch.equal(v, prior.network.state_dict()[k]) for k, v in ema.items())
    provenance = prior.provenance
    assert provenance["steps"] == 30 and provenance["final_train_loss"] > 0

    # the loss on a fixed batch with fixed noise fell well below the untrained network's (about 1: MONAI's UNet
    # starts with a zero output layer, so it predicts eps = 0)
    dm = DiffusionDataModule(cfg)
    dm.setup("fit")
    batch = torch.stack([torch.as_tensor(x) for x in dm.train_items[:8]]) * 2 - 1
    fresh = DiffusionPriorModule(cfg.network_config(), cfg.schedule, cfg.x_shape(), dm.normalisation.to_config())

    def loss(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(fresh.diffusion_loss(net, batch, torch.Generator().manual_seed(5)))

    before, after = loss(fresh.ema), loss(prior.network)
    assert before > 0.9 and after < 0.6 * before, (before, after)

    # resume: the global step continues from the checkpoint
    capfd.readouterr()
    train(tiny_config(data_dir, out, steps=35))
    assert "resuming from" in capfd.readouterr().err
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 35
    resumed = load_prior(weights).provenance
    assert resumed["steps"] == 35 and resumed["final_train_loss"] > 0
    assert resumed["wall_time_s"] > provenance["wall_time_s"]  # training time accumulates across resumes


def test_train_rejects_a_missing_resume_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        train(tiny_config(data_dir, tmp_path / "r", resume=str(tmp_path / "nope.ckpt")))


def test_cli_entry_point_reports_errors_in_one_line(capsys: pytest.CaptureFixture) -> None:
    from invdiff.training.__main__ import main

    assert main(["stepz=3", "data=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config: unknown key(s) ['stepz']") and err.count("\n") == 1
