"""Posterior samplers: plain functions with one shape, ``sample(prior, op, y, *, noise, ...) -> Reconstruction``.

* ``red_diff``: RED-Diff (Mardani et al. 2023), a MAP-like point estimate by Adam with a denoising regulariser.
* ``smc``: AFDPS (Chen et al. 2025), an ensemble of weighted particles that tracks the posterior.
"""

from .reconstruction import CALLBACK_KEYS, Reconstruction
from .red_diff import red_diff
from .smc import smc

__all__ = ["CALLBACK_KEYS", "Reconstruction", "red_diff", "smc"]
