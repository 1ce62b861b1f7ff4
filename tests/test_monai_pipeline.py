"""invdiff as a step of a MONAI pipeline: dictionary transforms and the bundle under pipelines/bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from nibabel.testing import data_path as nibabel_data

from invdiff.pipelines.transforms import RetrospectiveReconstructd

REPO = Path(__file__).resolve().parents[1]
ANATOMICAL = Path(nibabel_data) / "anatomical.nii"


def test_transform_composes_with_load_image_and_keeps_geometry() -> None:
    pipeline = Compose([
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        RetrospectiveReconstructd(keys="image", operator="inpainting", sampler_options={"steps": 2}, batch_size=32),
    ])
    out = pipeline({"image": str(ANATOMICAL)})
    recon = out["image_reconstruction"]
    assert recon.shape == out["image"].shape == (1, *nib.load(ANATOMICAL).shape)
    assert torch.allclose(recon.affine.double(), torch.as_tensor(nib.load(ANATOMICAL).affine, dtype=torch.float64))
    assert set(out["image_metrics"]) == {"reconstruction", "pseudo_inverse"}
    assert np.isfinite(recon.numpy()).all()


def test_bundle_runs_with_monai_bundle_run(tmp_path: Path) -> None:
    configs = REPO / "pipelines" / "bundle" / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(configs / "inference.yaml"), "--meta_file", str(configs / "metadata.json"),
        "--input_path", str(ANATOMICAL), "--output_dir", str(tmp_path), "--sampler_options", "{'steps': 2}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    written = nib.load(tmp_path / "anatomical_reconstruction.nii.gz")
    assert written.shape == nib.load(ANATOMICAL).shape
    np.testing.assert_allclose(written.affine, nib.load(ANATOMICAL).affine, atol=1e-5)
