"""`invdiff reconstruct` on hyperspectral cubes with DDS2M: formats, quality against the degraded input,
reproducibility, sidecars, and one-line errors.

The cube is a real-spectra scene from ``invdiff.hsi_data`` (32 x 32 pixels, 16 bands). DDS2M runs a few hundred
steps instead of its 800-3000 step presets, enough to beat the degraded input clearly (measured: denoising
sigma 0.1, 300 steps: 25.7-26.6 dB against the noisy cube's 20.0 dB; completion of 50 % of the voxels,
200 steps: 13.9-14.5 dB against 9.7 dB zero-filled; seeds 0-3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nibabel.testing import data_path as nibabel_data
from PIL import Image

from invdiff.cube_io import load_cube, save_cube
from invdiff.metrics import mpsnr
from invdiff.pipelines.cli import main

pytest.importorskip("earthlib", reason="the test scene needs the hsi extra (earthlib)")

BANDS, SIZE = 16, 32
CPU = ["--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    from invdiff.hsi_data import make_scene

    return make_scene("coffee", size=SIZE, bands=BANDS).numpy()


@pytest.fixture(scope="module")
def cube_npy(truth: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cubes") / "coffee.npy"
    np.save(path, truth)
    return path


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def provenance_of(output: Path) -> dict:
    return json.loads(output.with_name(output.name.rsplit(".", 1)[0] + "_provenance.json").read_text())


def test_help_and_info_list_the_hyperspectral_mode() -> None:
    code, out = run(["reconstruct", "--help"])
    assert code == 0 and "hsi-denoising" in out and "--cube-layout" in out and "dds2m" in out
    code, out = run(["info"])
    assert code == 0
    for name in ("hsi-denoising", "hsi-completion", "hsi-super-resolution", "hsi-spectral-response", "dds2m"):
        assert name in out


def test_denoising_beats_the_noisy_cube_and_writes_sidecars(truth: np.ndarray, cube_npy: Path, tmp_path: Path) -> None:
    output = tmp_path / "restored.npy"
    args = ["reconstruct", str(cube_npy), "-o", str(output), "--operator", "hsi-denoising", "--noise-sigma", "0.1"]
    code, out = run([*args, "--steps", "300", *CPU])
    assert code == 0, out
    restored = np.load(output)
    assert restored.shape == (BANDS, SIZE, SIZE) and restored.dtype == np.float32
    provenance = provenance_of(output)
    # Gaussian noise of std 0.1 on a cube of maximum 1: PSNR = 10 log10(1 / 0.1^2) = 20 dB per band, up to the
    # sampling error of the MSE over 1024 pixels (~0.2 dB per band, less in the mean over bands).
    noisy_mpsnr = provenance["metrics"]["pseudo_inverse"]["mpsnr"]
    assert noisy_mpsnr == pytest.approx(20.0, abs=0.3)
    restored_mpsnr = mpsnr(truth, restored)
    assert restored_mpsnr > noisy_mpsnr + 3.0
    assert provenance["metrics"]["reconstruction"]["mpsnr"] == pytest.approx(restored_mpsnr, abs=1e-6)
    assert provenance["sampler"]["name"] == "dds2m" and provenance["prior"]["name"] is None
    # The user's steps over the denoising preset (T = 2000, etas 1) of invdiff.samplers.dds2m.DDS2M_PRESETS.
    assert provenance["sampler"]["options"]["steps"] == 300 and provenance["sampler"]["options"]["T"] == 2000
    assert provenance["input"]["shape"] == [BANDS, SIZE, SIZE] and provenance["input"]["sha256"]
    assert set(provenance["metrics"]["reconstruction"]) >= {"mpsnr", "mssim", "sam"}
    assert "MPSNR" in out and "SAM" in out
    with Image.open(tmp_path / "restored_report.png") as report:
        pixels = np.asarray(report.convert("RGB")).astype(int)
    assert report.size[0] > 4 * 256  # truth, degraded, restored, error
    # False colour, not grey: the truth panel (first 256 columns after the 6-pixel margin) has coloured pixels.
    truth_panel = pixels[28 : 28 + 256, 6 : 6 + 256]
    assert np.abs(truth_panel[..., 0] - truth_panel[..., 2]).max() > 20


def test_completion_mat_in_and_out_same_seed_same_output(truth: np.ndarray, tmp_path: Path) -> None:
    source = save_cube(truth, tmp_path / "scene.mat")  # stored (H, W, bands), as MATLAB users keep cubes
    assert np.array_equal(load_cube(source).numpy(), truth)
    first, second = tmp_path / "a.mat", tmp_path / "b.mat"
    args = ["--operator", "hsi-completion", "--param", "missing_rate=0.5", "--noise-sigma", "0.05", "--steps", "200"]
    for output in (first, second):
        code, out = run(["reconstruct", str(source), "-o", str(output), *args, *CPU])
        assert code == 0, out
    a, b = load_cube(first).numpy(), load_cube(second).numpy()
    assert a.shape == (BANDS, SIZE, SIZE)
    assert np.array_equal(a, b)
    zero_filled = provenance_of(first)["metrics"]["pseudo_inverse"]["mpsnr"]
    assert mpsnr(truth, a) > zero_filled + 3.0
    assert (tmp_path / "a_report.png").is_file()


def test_super_resolution_envi_in_tiff_out(truth: np.ndarray, tmp_path: Path) -> None:
    """Plumbing only (10 steps): ENVI input, TIFF output of the full-resolution shape."""
    pytest.importorskip("spectral")
    source = save_cube(truth, tmp_path / "scene.hdr")
    output = tmp_path / "sr.tif"
    code, out = run(
        [
            "reconstruct",
            str(source),
            "-o",
            str(output),
            "--operator",
            "hsi-super-resolution",
            "--param",
            "factor=2",
            "--steps",
            "10",
            *CPU,
        ]
    )
    assert code == 0, out
    assert load_cube(output).shape == (BANDS, SIZE, SIZE)
    record = provenance_of(output)
    assert record["input"]["kind"] == "cube-hdr" and record["operator"]["type"] == "HyperspectralSuperResolution"


def test_explicit_layout_reads_and_writes_hwc(truth: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "hwc.npy"
    np.save(source, np.moveaxis(truth, 0, -1))
    output = tmp_path / "out.npy"
    code, out = run(
        [
            "reconstruct",
            str(source),
            "-o",
            str(output),
            "--operator",
            "hsi-denoising",
            "--cube-layout",
            "hwc",
            "--steps",
            "4",
            *CPU,
        ]
    )
    assert code == 0, out
    assert np.load(output).shape == (SIZE, SIZE, BANDS)
    assert provenance_of(output)["input"]["shape"] == [BANDS, SIZE, SIZE]


@pytest.mark.parametrize(
    "args,message",
    [
        # (H, W, bands) in a .npy, which is read as (bands, H, W) by default
        (["{hwc}", "--operator", "hsi-denoising"], "pass --cube-layout hwc"),
        # band count mismatch between an operator option and the cube
        (
            ["{cube}", "--operator", "hsi-spectral-response", "--param", "wavelengths=[400,500,600]"],
            "wavelengths has 3 values but the cube has 16 bands",
        ),
        (
            ["{cube}", "--operator", "hsi-completion", "--param", "mode=bands", "--param", "missing_bands=[2,16]"],
            "band indices in [0, 16)",
        ),
        (
            ["{cube}", "--operator", "hsi-completion", "--param", "missing_rate=1"],
            "missing_rate must be a number in [0, 1)",
        ),
        (["{cube}", "--operator", "hsi-super-resolution", "--param", "factor=3"], "not divisible by factor 3"),
        # an hsi operator on MRI images
        (["{slice2d}", "--operator", "hsi-denoising"], "operator 'hsi-denoising' needs a hyperspectral cube"),
        (["{nifti}", "--operator", "hsi-denoising"], "INPUT must be a cube file"),
        # dds2m with an MRI operator, a prior-based sampler with an hsi operator, a prior for dds2m
        (["{nifti}", "--sampler", "dds2m"], "sampler 'dds2m' restores hyperspectral cubes; it needs an hsi operator"),
        (["{cube}", "--operator", "hsi-denoising", "--sampler", "red-diff"], "no trained prior ships"),
        (["{cube}", "--operator", "hsi-denoising", "--prior", "brain-mri"], "--prior brain-mri does not apply"),
        (["{cube}", "--operator", "hsi-denoising", "--batch-size", "4"], "--batch-size 4 does not apply"),
        (["{cube}", "--operator", "hsi-denoising", "--option", "speed=3"], "unknown option(s) ['speed']"),
        (["{cube}", "--operator", "hsi-denoising", "--option", "spatial=huge"], "spatial must be 'cpu', 'paper'"),
        (["{nifti}", "--cube-layout", "hwc"], "--cube-layout hwc does not apply"),
    ],
)
def test_bad_input_is_one_line_error_without_output(
    args: list[str], message: str, cube_npy: Path, truth: np.ndarray, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "hwc.npy", np.moveaxis(truth, 0, -1))
    np.save(inputs / "slice2d.npy", truth[0])
    names = {
        "cube": cube_npy,
        "hwc": inputs / "hwc.npy",
        "slice2d": inputs / "slice2d.npy",
        "nifti": Path(nibabel_data) / "anatomical.nii",
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, text = run(["reconstruct", *[a.format(**names) for a in args], "-o", str(out_dir / "x.npy"), *CPU])
    assert code != 0
    assert message in text
    assert "Traceback" not in text
    assert len([line for line in text.strip().splitlines() if line.startswith("Error")]) == 1
    assert list(out_dir.iterdir()) == []  # nothing written, not even a sidecar


def test_refuses_to_overwrite_and_to_replace_the_input(cube_npy: Path, tmp_path: Path) -> None:
    before = cube_npy.read_bytes()
    output = tmp_path / "x.npy"
    output.write_bytes(b"keep")
    code, text = run(["reconstruct", str(cube_npy), "-o", str(output), "--operator", "hsi-denoising", *CPU])
    assert code == 1 and "already exists" in text and output.read_bytes() == b"keep"
    code, text = run(
        ["reconstruct", str(cube_npy), "-o", str(cube_npy), "--operator", "hsi-denoising", "--overwrite", *CPU]
    )
    assert code == 1 and "would replace the input" in text
    assert cube_npy.read_bytes() == before
