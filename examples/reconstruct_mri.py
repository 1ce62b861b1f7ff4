"""Reconstruct a held-out brain slice from 4x single-coil k-space with RED-Diff, from Python.

    python examples/reconstruct_mri.py

Prints the PSNR of the zero-filled image and of the reconstruction against the truth.
"""

from __future__ import annotations

import numpy as np
import torch

from invdiff import metrics
from invdiff.data import data_path
from invdiff.operators import GaussianNoise, RealAsComplexChannels, SinglecoilMRI, random_column_mask
from invdiff.priors import load_prior
from invdiff.samplers import red_diff


def main() -> None:
    prior = load_prior("brain-mri")
    u = torch.from_numpy(np.load(data_path("dipy_t1_coronal_64.npy")))[None, None]  # data units, [0, 1]
    g = torch.Generator().manual_seed(0)
    mask = random_column_mask((64, 64), 4, 0.08, generator=g)
    op = SinglecoilMRI(mask, complex_channels=True) @ RealAsComplexChannels((64, 64))
    noise = GaussianNoise(0.01)  # data units
    y = noise.sample(op(u), generator=g)

    # Work in the prior's space x = 2u - 1: for a linear operator y_p = 2 y - A(1), noise 2 sigma.
    norm = prior.normalisation
    y_prior = norm.scale * y + norm.offset * op(torch.ones_like(u))
    zero_filled = op.pinv(y)
    rec = red_diff(prior, op, y_prior, noise=GaussianNoise(0.01 * norm.scale), steps=200, lam=300.0, lr=0.1,
                   init=norm.forward(zero_filled), generator=g)
    estimate = norm.inverse(rec.x)
    truth = u[0, 0].numpy()
    print(f"zero-filled    PSNR {metrics.psnr(truth, zero_filled[0, 0].numpy()):.2f} dB")
    print(f"RED-Diff       PSNR {metrics.psnr(truth, estimate[0, 0].numpy()):.2f} dB  ({int(rec.diagnostics['nfe'])} network evaluations)")


if __name__ == "__main__":
    main()
