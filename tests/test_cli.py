"""The `invdiff` CLI on real files from installed wheels, and its error paths.

Sampler step counts are tiny here: these tests check plumbing (formats, geometry, provenance,
reproducibility, errors), not reconstruction quality (see benchmarks/).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from nibabel.testing import data_path as nibabel_data
from pydicom.data import get_testdata_file

from invdiff.pipelines.cli import main

FAST = ["--option", "steps=3", "--batch-size", "32", "--device", "cpu"]


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_help_lists_every_command_with_examples() -> None:
    code, out = run(["--help"])
    assert code == 0
    for command in ("reconstruct", "evaluate", "info", "demo"):
        assert command in out
        sub_code, sub_out = run([command, "--help"])
        assert sub_code == 0
    assert "Examples" in run(["reconstruct", "--help"])[1]


def test_info_lists_tables() -> None:
    code, out = run(["info"])
    assert code == 0
    for name in ("mri", "mri-multicoil", "inpainting", "blur", "super-resolution", "red-diff", "smc", "brain-mri", "cpu"):
        assert name in out


def test_nifti_reconstruction_keeps_affine_and_writes_sidecars(tmp_path: Path) -> None:
    source = Path(nibabel_data) / "anatomical.nii"
    output = tmp_path / "recon.nii.gz"
    code, out = run(["reconstruct", str(source), "-o", str(output), *FAST])
    assert code == 0, out
    written = nib.load(output)
    assert np.array_equal(written.affine, nib.load(source).affine)
    assert written.shape == nib.load(source).shape
    assert (tmp_path / "recon_report.png").is_file()
    provenance = json.loads((tmp_path / "recon_provenance.json").read_text())
    assert provenance["input"]["sha256"] and provenance["seed"] == 0
    assert provenance["operator"]["name"] == "mri" and provenance["sampler"]["name"] == "red-diff"
    assert set(provenance["metrics"]) == {"reconstruction", "pseudo_inverse"}
    assert "PSNR" in out


def test_dicom_reconstruction_is_a_derived_series(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    output = tmp_path / "series"
    code, out = run(["reconstruct", str(source), "-o", str(output), "--operator", "inpainting", *FAST])
    assert code == 0, out
    files = sorted(output.glob("*.dcm"))
    assert len(files) == 1
    ds, src = pydicom.dcmread(files[0]), pydicom.dcmread(source)
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert "DERIVED" in ds.ImageType
    assert list(ds.ImagePositionPatient) == list(src.ImagePositionPatient)


def test_same_seed_same_output_and_no_overwrite(tmp_path: Path) -> None:
    source = str(get_testdata_file("MR_small.dcm"))
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    assert run(["reconstruct", source, "-o", str(first), *FAST])[0] == 0
    assert run(["reconstruct", source, "-o", str(second), *FAST])[0] == 0
    assert np.array_equal(np.load(first), np.load(second))
    before = first.read_bytes()
    code, out = run(["reconstruct", source, "-o", str(first), *FAST, "--seed", "1"])
    assert code == 1 and "already exists" in out and "--overwrite" in out
    assert first.read_bytes() == before
    code, out = run(["reconstruct", source, "-o", str(first), *FAST, "--seed", "1", "--overwrite"])
    assert code == 0 and first.read_bytes() != before


@pytest.mark.parametrize(
    "args,message",
    [
        (["reconstruct", "missing.nii", "-o", "x.nii"], "missing.nii"),
        (["reconstruct", "{ct}", "-o", "{out}", "--operator", "tomography"], "unknown operator 'tomography'; choose from"),
        (["reconstruct", "{ct}", "-o", "{out}", "--param", "acceleration"], "--param expects KEY=VALUE"),
        (["reconstruct", "{ct}", "-o", "{out}", "--param", "speed=3"], "unknown option(s) ['speed']"),
        (["reconstruct", "{ct}", "-o", "{out}", "--param", "acceleration=0"], "acceleration"),
        (["reconstruct", "{ct}", "-o", "{out}", "--sampler", "ddpm"], "unknown sampler 'ddpm'"),
        (["reconstruct", "{ct}", "-o", "{out}", "--prior", "knee"], "unknown shipped prior"),
        (["reconstruct", "{ct}", "-o", "{out}", "--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_input_is_one_line_error(args: list[str], message: str, tmp_path: Path) -> None:
    ct = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out.npy"
    args = [a.format(ct=ct, out=out) for a in args]
    code, text = run(args)
    assert code != 0
    assert message in text
    assert "Traceback" not in text
    assert len([line for line in text.strip().splitlines() if line.startswith("Error")]) == 1
    assert not out.exists()


def test_simulate_then_prospective_reconstruction(tmp_path: Path) -> None:
    """Simulated fastMRI-style HDF5 k-space (single- and multi-coil) reconstructs in prospective mode."""
    source = str(Path(nibabel_data) / "anatomical.nii")
    for operator, extra in (("mri", []), ("mri-multicoil", ["--param", "coils=4"])):
        kspace = tmp_path / f"{operator}.h5"
        code, out = run(["simulate", source, "-o", str(kspace), "--operator", operator, *extra])
        assert code == 0, out
        assert (tmp_path / f"{operator}_provenance.json").is_file()
        recon = tmp_path / f"{operator}_recon.npy"
        code, out = run(["reconstruct", str(kspace), "--kspace", "-o", str(recon), "--option", "steps=2", "--device", "cpu"])
        assert code == 0, out
        assert np.load(recon).shape == (25, 41, 33)
        provenance = json.loads((tmp_path / f"{operator}_recon_provenance.json").read_text())
        assert provenance["mode"] == "prospective"


def test_simulate_rejects_wrong_output_kind(tmp_path: Path) -> None:
    code, out = run(["simulate", str(get_testdata_file("MR_small.dcm")), "-o", str(tmp_path / "k.npy")])
    assert code == 1 and "MRI operators write .h5" in out


def test_lightning_predict_path_matches_the_loop(tmp_path: Path) -> None:
    """--devices runs the batches through Lightning Trainer.predict; the result equals the in-process loop."""
    source = str(Path(nibabel_data) / "anatomical.nii")
    loop, lightning = tmp_path / "loop.npy", tmp_path / "lightning.npy"
    args = ["--option", "steps=2", "--batch-size", "10", "--device", "cpu"]
    assert run(["reconstruct", source, "-o", str(loop), *args])[0] == 0
    code, out = run(["reconstruct", source, "-o", str(lightning), *args, "--devices", "1"])
    assert code == 0, out
    np.testing.assert_array_equal(np.load(loop), np.load(lightning))
    assert json.loads((tmp_path / "lightning_provenance.json").read_text())["sampler"]["diagnostics"]["batches"] == 3
