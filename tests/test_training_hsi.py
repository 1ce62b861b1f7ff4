"""Training a diffusion prior on the orthonormal latent of hyperspectral cubes (spectral PCA, then a 2D wavelet):
training scenes disjoint from the evaluation ones, config errors, a short run that exports a prior which reloads
with its composed transform, and a reconstruction with that prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from invdiff import hsi_data
from invdiff.hsi_data import SCENES, TRAINING_SCENES, make_scene
from invdiff.operators import GaussianNoise, SpectralTransform, WaveletTransform
from invdiff.operators.hyperspectral import HyperspectralDenoising
from invdiff.priors import WaveletLatentPrior, load_prior
from invdiff.training import TrainConfig, load_config, train
from invdiff.training.config import build_latent_transform

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


def test_training_scenes_are_deterministic_and_disjoint_from_the_evaluation_scenes() -> None:
    assert not set(TRAINING_SCENES) & set(SCENES)
    training_photos = {photo for photo, _ in hsi_data._TRAINING_SCENES.values()}
    assert not training_photos & {photo for photo, _ in hsi_data._SCENES.values()}
    a, b = make_scene("retina", 32, 16), make_scene("retina", 32, 16)
    assert torch.equal(a, b) and a.shape == (16, 32, 32) and float(a.min()) >= 0 and float(a.max()) == 1.0


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data=hsi-training", "channels=1"], r"channels must be the band count \(2-180\)"),
        (["data=hsi-training", "channels=16", "latent={wavelet: haar, spectral: {kind: pca, rank: 17}}"],
         r"latent.spectral.rank must be an integer in \[1, bands=16\], got 17"),
        (["data=hsi-training", "channels=16", "latent={wavelet: haar, spectral: {kind: svd}}"],
         r"latent.spectral must be \{kind: pca, rank: r\}"),
        (["data=mni152-t1", "latent={wavelet: haar, spectral: {kind: pca, rank: 4}}"],
         r"latent.spectral .* needs hyperspectral cubes \(data: hsi-training\)"),
        (["data=x", "patches_per_volume=4"], r"spatial_dims must be 3 \(or data 'hsi-training'\)"),
    ],
)
def test_config_errors(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_pca_latent_needs_its_basis_outside_the_config() -> None:
    with pytest.raises(ValueError, match="has no basis yet"):
        build_latent_transform((16, 8, 8), {"wavelet": "haar", "spectral": {"kind": "pca", "rank": 4}})


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "examples" / "train_hsi_wavelet_prior.yaml")
    assert cfg.is_cube_data and cfg.x_shape() == (31, 32, 32)
    assert cfg.network_config()["in_channels"] == 32  # rank 8 x 4 Haar subbands


def test_spectral_wavelet_latent_is_orthonormal() -> None:
    w = build_latent_transform((16, 8, 8), {"wavelet": "haar", "spectral": {"kind": "wavelet", "keep": 16}})
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    assert w.y_shape == (64, 4, 4)
    torch.testing.assert_close(w.adjoint(w(x)), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(w(x).norm(), x.norm(), atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, WaveletLatentPrior]:
    out = tmp_path_factory.mktemp("hsi")
    cfg = TrainConfig(data="hsi-training", output_dir=str(out), export=str(out / "prior"), image_size=16, channels=16,
                      patches_per_volume=4, val_fraction=0.25, batch_size=4, network=TINY_NET, steps=12, lr=2e-3,
                      latent={"wavelet": "haar", "levels": 1, "spectral": {"kind": "pca", "rank": 4}},
                      val_every=6, sample_every=0, final_sample_steps=3, checkpoint_every=6, export_every=6,
                      progress_bar=False, log_every=6, threads=1)
    train(cfg)
    prior = load_prior(out / "prior")
    assert isinstance(prior, WaveletLatentPrior)
    return cfg, prior


def test_short_run_exports_a_latent_prior_with_the_fitted_basis(trained) -> None:
    cfg, prior = trained
    assert prior.image_shape == (16, 16, 16) and prior.x_shape == (16, 8, 8)  # 4 spectral x 4 Haar subbands
    transform = prior.transform
    assert isinstance(transform.outer, WaveletTransform) and isinstance(transform.inner, SpectralTransform)
    # The basis is the PCA of the three training cubes (one of four is the validation split) in prior space.
    from invdiff.training.data import DiffusionDataModule

    dm = DiffusionDataModule(cfg)
    dm.setup("fit")
    unique = {id(c): c for c in dm.train_items}.values()
    cubes = 2 * torch.stack([torch.as_tensor(c) for c in unique]).double() - 1
    expected = SpectralTransform.pca(cubes, 4).basis
    torch.testing.assert_close(transform.inner.basis, expected, atol=1e-6, rtol=0)
    # Partial isometry: W W^T = I on latents, and W^T W is the projection onto the kept spectral subspace.
    z = torch.randn(3, *prior.x_shape, dtype=torch.float64)
    torch.testing.assert_close(transform(transform.adjoint(z)), z, atol=1e-10, rtol=0)
    x = torch.randn(3, *prior.image_shape, dtype=torch.float64)
    projected = transform.adjoint(transform(x))
    torch.testing.assert_close(transform.adjoint(transform(projected)), projected, atol=1e-10, rtol=0)
    assert (Path(cfg.output_dir) / "prior_samples.png").exists()


def test_reconstruction_with_the_trained_cube_prior(trained) -> None:
    """Plumbing: RED-Diff in the latent of the reloaded prior restores a noisy cube of the tuning scene (a few
    steps; quality is measured outside the tests)."""
    from invdiff.samplers import red_diff, sampler_for_prior

    _, prior = trained
    x = make_scene("rocket", 16, 16)[None]
    op = HyperspectralDenoising((16, 16, 16))
    g = torch.Generator().manual_seed(0)
    y = GaussianNoise(0.1).sample(op(x), generator=g)
    norm = prior.normalisation
    rec = sampler_for_prior(red_diff, prior)(prior, op, norm.forward(y), noise=GaussianNoise(0.2), steps=5, lam=10.0,
                                             generator=g)
    assert rec.x.shape == (1, 16, 16, 16) and bool(torch.isfinite(rec.x).all())
    assert np.isfinite(norm.inverse(rec.x).numpy()).all()


def test_cube_prior_on_larger_cubes_keeps_its_basis_and_network(trained) -> None:
    _, prior = trained
    bigger = prior.with_shape((16, 32, 32))
    assert bigger.x_shape == (16, 16, 16) and bigger.image_shape == (16, 32, 32)
    torch.testing.assert_close(bigger.transform.inner.basis, prior.transform.inner.basis, atol=0, rtol=0)
    assert bigger.prior.network is prior.prior.network
    with pytest.raises(ValueError, match="must keep the channels"):
        prior.with_shape((8, 32, 32))
