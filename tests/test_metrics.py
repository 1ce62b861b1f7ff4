"""Metrics against independent references: scikit-image, direct formulas and known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invdiff import metrics


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((3, 24, 20))
    return x, x + 0.05 * rng.standard_normal(x.shape)


def test_psnr_matches_skimage_with_fastmri_range(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    assert metrics.psnr(x, y) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=x.max()), rel=1e-12)


def test_ssim_is_the_slice_mean_of_skimage(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    ref = np.mean([structural_similarity(a, b, data_range=x.max()) for a, b in zip(x, y, strict=True)])
    assert metrics.ssim(x, y) == pytest.approx(ref, rel=1e-12)
    assert metrics.ssim(x[0], x[0]) == pytest.approx(1.0)


def test_nmse_formula_and_tensor_input(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    assert metrics.nmse(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        np.linalg.norm(x - y) ** 2 / np.linalg.norm(x) ** 2, rel=1e-12
    )
    assert metrics.psnr(x, x) == math.inf


def test_sam_known_angles() -> None:
    x = np.zeros((2, 1, 2))
    x[:, 0, 0] = [1, 0]
    x[:, 0, 1] = [1, 1]
    y = np.zeros_like(x)
    y[:, 0, 0] = [0, 1]  # 90 degrees
    y[:, 0, 1] = [2, 2]  # 0 degrees (scale does not change the angle)
    assert metrics.sam(x, y) == pytest.approx(45.0)


def test_ergas_and_mpsnr(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    rmse = np.sqrt(((x - y) ** 2).mean(axis=(1, 2)))
    assert metrics.ergas(x, y, scale=4) == pytest.approx(25 * np.sqrt(np.mean((rmse / x.mean(axis=(1, 2))) ** 2)))
    bandwise = [peak_signal_noise_ratio(a, b, data_range=x.max()) for a, b in zip(x, y, strict=True)]
    assert metrics.mpsnr(x, y) == pytest.approx(np.mean(bandwise))
    assert metrics.mssim(x, y) == pytest.approx(metrics.ssim(x, y))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: metrics.psnr(np.ones((4, 4)), np.ones((4, 5))), "expected the target's shape"),
        (lambda: metrics.psnr(np.zeros((4, 4)), np.zeros((4, 4))), "data_range must be > 0"),
        (lambda: metrics.sam(np.ones((4, 4)), np.ones((4, 4))), r"cube \(bands, H, W\)"),
        (lambda: metrics.nmse(np.full((2, 2), np.nan), np.ones((2, 2))), "NaN"),
        (lambda: metrics.ergas(np.ones((2, 3, 3)), np.ones((2, 3, 3)), scale=0), "scale must be > 0"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
