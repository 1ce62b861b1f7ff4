"""Priors: the ``Prior`` protocol, the analytic Gaussian prior, the MONAI network prior, the wavelet-latent
wrapper and checkpoints.

Importing this package stays light: MONAI and safetensors are imported when a network is built or loaded.
"""

from .ancestral import ancestral_sample
from .base import Prior, eps, score
from .checkpoint import SHIPPED, load_prior, read_prior_config, save_prior
from .gaussian import GaussianPrior
from .network import NetworkPrior, Normalisation, build_unet
from .wavelet import WaveletLatentPrior

__all__ = [
    "SHIPPED",
    "GaussianPrior",
    "NetworkPrior",
    "Normalisation",
    "Prior",
    "WaveletLatentPrior",
    "ancestral_sample",
    "build_unet",
    "eps",
    "load_prior",
    "read_prior_config",
    "save_prior",
    "score",
]
