"""The pipeline's starting estimate: the pseudo-inverse, truncated at the noise level only where it matters."""

from __future__ import annotations

import numpy as np
import torch

from invdiff import metrics
from invdiff.data import data_path
from invdiff.operators import GaussianNoise
from invdiff.pipelines.reconstruct import starting_estimate
from invdiff.pipelines.registry import OPERATORS

SIGMA = 0.01


def _measure(name: str, **options: object) -> tuple[object, torch.Tensor, np.ndarray]:
    image = np.load(data_path("dipy_t1_coronal_64.npy")).astype(np.float64)
    g = torch.Generator().manual_seed(0)
    op = OPERATORS[name]((1, 64, 64), generator=g, **options).double()
    y = GaussianNoise(SIGMA).sample(op(torch.from_numpy(image)[None, None]), generator=g)
    return op, y, image


def test_blur_truncation_removes_the_noise_blow_up() -> None:
    op, y, image = _measure("blur", kernel="gaussian", sigma=2.0)
    exact = metrics.psnr(image, op.pinv(y)[0, 0].numpy())
    start = metrics.psnr(image, starting_estimate(op, y, SIGMA)[0, 0].numpy())
    assert exact < 0 and start > 24  # measured: -61.5 dB and 25.5 dB


def test_well_conditioned_operators_keep_their_exact_pseudo_inverse() -> None:
    for name, options in (("inpainting", {"keep_fraction": 0.3}), ("super-resolution", {"factor": 4}),
                          ("mri", {"acceleration": 4})):
        op, y, _ = _measure(name, **options)
        torch.testing.assert_close(starting_estimate(op, y, SIGMA), op.pinv(y), rtol=0, atol=1e-12)
