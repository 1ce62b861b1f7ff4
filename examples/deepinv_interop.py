"""deepinv and invdiff on one problem: deepinv's DiffPIR and DPS on the shipped invdiff prior, invdiff's RED-Diff on a
deepinv physics. Needs the benchmark environment (README, "Benchmarks"):

    .venv-bench/bin/python examples/deepinv_interop.py

Prints the PSNR of each estimate against the held-out slice.
"""

from __future__ import annotations

import deepinv as dinv
import numpy as np
import torch

from invdiff import metrics
from invdiff.data import data_path
from invdiff.interop.deepinv import from_deepinv_physics, run_deepinv_sampler
from invdiff.operators import GaussianNoise
from invdiff.priors import load_prior
from invdiff.samplers import red_diff


def main() -> None:
    prior = load_prior("brain-mri")
    truth = np.load(data_path("dipy_t1_coronal_64.npy"))
    u = torch.from_numpy(truth)[None, None]  # data units, [0, 1]
    g = torch.Generator().manual_seed(0)

    # A deepinv physics: 70 % of the pixels missing, Gaussian noise 0.01.
    physics = dinv.physics.Inpainting(img_size=(1, 64, 64), mask=0.3, rng=g,
                                      noise_model=dinv.physics.GaussianNoise(sigma=0.01, rng=g))
    y = physics(u)
    op, noise = from_deepinv_physics(physics, u)  # an invdiff LinearOperator and GaussianNoise(0.01)
    print(f"pseudo-inverse  {metrics.psnr(truth, op.pinv(y)[0, 0].numpy()):6.2f} dB")

    # deepinv samplers with the invdiff prior (wrapped as a deepinv denoiser inside run_deepinv_sampler). DDRM also
    # needs a closed-form SVD, which invdiff's own operators carry (to_deepinv_physics keeps it) but a converted
    # deepinv physics does not.
    for name, options in (("DiffPIR", {"lambda_": 1.0}), ("DPS", {"weight": 100.0})):
        x = run_deepinv_sampler(name, prior, op, y, sigma=noise.sigma, steps=100, generator=g, options=options)
        print(f"deepinv {name:7s} {metrics.psnr(truth, x[0, 0].numpy()):6.2f} dB")

    # invdiff RED-Diff on the deepinv physics, in the prior's space x = 2u - 1 (y_p = 2y - A(1), noise 2 sigma).
    norm = prior.normalisation
    y_p = norm.scale * y + norm.offset * op(torch.ones_like(u))
    rec = red_diff(prior, op, y_p, noise=GaussianNoise(abs(norm.scale) * noise.sigma), steps=100, lam=30.0, lr=0.1,
                   init=norm.forward(op.pinv(y)), generator=g)
    print(f"invdiff RED-Diff {metrics.psnr(truth, norm.inverse(rec.x)[0, 0].numpy()):6.2f} dB")


if __name__ == "__main__":
    main()
