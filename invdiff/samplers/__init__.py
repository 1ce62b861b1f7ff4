"""Posterior samplers: plain functions with one shape, ``sample(prior, op, y, *, noise, ...) -> Reconstruction``.

* ``red_diff``: RED-Diff (Mardani et al. 2023), a MAP-like point estimate by Adam with a denoising regulariser.
* ``dds2m``: DDS2M (Miao et al. 2023), self-supervised hyperspectral restoration in a DDRM chain; no trained prior.
* ``smc``: AFDPS (Chen et al. 2025), an ensemble of weighted particles that tracks the posterior.
* ``wavelet_latent``: any of these run in the latent of an orthonormal wavelet/spectral transform
  (operator composed with the inverse transform), results mapped back to image space.
"""

from .dds2m import DDS2M_PRESETS, dds2m, dds2m_schedule
from .reconstruction import CALLBACK_KEYS, Reconstruction
from .red_diff import red_diff
from .smc import smc
from .wavelet_latent import sampler_for_prior, wavelet_latent

__all__ = [
    "CALLBACK_KEYS",
    "DDS2M_PRESETS",
    "Reconstruction",
    "dds2m",
    "dds2m_schedule",
    "red_diff",
    "sampler_for_prior",
    "smc",
    "wavelet_latent",
]
