"""A diffusion prior whose state is the latent ``z = W x`` of an orthonormal transform (wavelet, spectral).

The inner prior (a ``NetworkPrior`` trained on latents, or any ``Prior`` such as a ``GaussianPrior`` over
latents) diffuses ``z``; this wrapper is itself a ``Prior`` *on latents* (``x_shape`` is the latent shape),
so every sampler runs on it unchanged once the operator is composed with the decoder (``op @
Synthesis(W)``; ``invdiff.samplers.wavelet_latent`` does that). Because ``W`` is orthonormal, the VP noise
``N(0, I)`` is the same in both spaces, and a Gaussian prior ``N(m_z, S)`` on latents is the image-space
prior ``N(W^T m_z, W^T S W)``.

Spaces: ``u`` data units --``normalisation``--> ``x`` image (prior) space --``W``--> ``z`` latent.
``encode``/``decode`` map ``x <-> z``; ``normalisation`` is the inner network prior's (image-space) map.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..operators import LinearOperator, SpectralTransform, WaveletTransform, is_orthonormal_transform
from .base import Prior
from .network import NetworkPrior, Normalisation

__all__ = ["WaveletLatentPrior"]


class WaveletLatentPrior:
    """A ``Prior`` over the latent ``z = W x`` of an orthonormal (or partially isometric) transform ``W``.

    Args:
        prior: the latent prior, with ``prior.x_shape == transform.y_shape``.
        transform: ``W``, image -> latent: a ``WaveletTransform``, ``SpectralTransform`` or a composition
            (``WaveletTransform(...) @ SpectralTransform(...)``), or any ``LinearOperator`` with ``W W^T = I``.
        clip: if set, ``denoise`` clamps the decoded estimate to ``[-clip, clip]`` in *image* space and encodes
            it again (``W^T`` then clamp then ``W``): the image-space counterpart of ``NetworkPrior``'s clip
            (1.0 for one-channel data in [-1, 1]); clamping latents directly would be meaningless.

    Attributes:
        x_shape: the latent shape (what samplers and the network see). image_shape: ``transform.x_shape``.

    Raises:
        TypeError: ``prior`` is not a ``Prior`` or ``transform`` not a ``LinearOperator``.
        ValueError: shape mismatch, bad ``clip``.

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> from invdiff.priors.gaussian import GaussianPrior
        >>> w = WaveletTransform((1, 8, 8), "haar")
        >>> latent = GaussianPrior.diagonal(torch.zeros(4, 4, 4), 1.0, VPSchedule())
        >>> prior = WaveletLatentPrior(latent, w)
        >>> prior.x_shape, prior.image_shape
        ((4, 4, 4), (1, 8, 8))
    """

    def __init__(self, prior: Prior, transform: LinearOperator, *, clip: float | None = None) -> None:
        if not isinstance(prior, Prior):
            raise TypeError(f"WaveletLatentPrior: prior must implement the Prior protocol, got {type(prior).__name__}")
        if not isinstance(transform, LinearOperator):
            raise TypeError(f"WaveletLatentPrior: transform must be a LinearOperator, got {type(transform).__name__}")
        if tuple(prior.x_shape) != tuple(transform.y_shape):
            raise ValueError(
                f"WaveletLatentPrior: prior.x_shape {tuple(prior.x_shape)} differs from the transform's latent shape "
                f"{tuple(transform.y_shape)}"
            )
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ValueError(f"WaveletLatentPrior: clip must be a number > 0 or None, got {clip!r}")
        self.prior = prior
        self.transform = transform
        self.clip = clip
        self.schedule = prior.schedule
        self.x_shape: tuple[int, ...] = tuple(transform.y_shape)
        self.image_shape: tuple[int, ...] = tuple(transform.x_shape)

    # ---- the Prior protocol ---------------------------------------------------------------------
    def denoise(self, z_t: Tensor, t: Tensor) -> Tensor:
        """``E[z0 | z_t]`` from the inner prior (latent space), clamped in image space when ``clip`` is set."""
        z0 = self.prior.denoise(z_t, t)
        if self.clip is None:
            return z0
        return self.encode(self.decode(z0).clamp(-self.clip, self.clip))

    # ---- spaces ------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Image (prior space) ``(B, *image_shape)`` -> latent ``(B, *x_shape)``."""
        return self.transform(x.to(self.device))

    def decode(self, z: Tensor) -> Tensor:
        """Latent ``(B, *x_shape)`` -> image (prior space) ``(B, *image_shape)``: ``W^T z``."""
        self.transform.check_y(z, "z")
        return self.transform.adjoint(z)

    @property
    def orthonormal(self) -> bool:
        """``W^T W = I`` too (not only ``W W^T = I``): every image is representable exactly."""
        return is_orthonormal_transform(self.transform)

    # ---- what a NetworkPrior offers, delegated ---------------------------------------------------------
    @property
    def normalisation(self) -> Normalisation:
        return getattr(self.prior, "normalisation", Normalisation())

    @property
    def network(self) -> torch.nn.Module:
        return self._network_prior("network").network

    @property
    def network_config(self) -> dict[str, Any] | None:
        return getattr(self.prior, "network_config", None)

    @property
    def prediction(self) -> str:
        return getattr(self.prior, "prediction", "epsilon")

    @property
    def provenance(self) -> dict[str, Any]:
        return getattr(self.prior, "provenance", {})

    @property
    def nfe(self) -> int:
        return int(getattr(self.prior, "nfe", 0))

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.prior.nfe = value  # type: ignore[attr-defined]

    def reset_nfe(self) -> None:
        if hasattr(self.prior, "nfe"):
            self.prior.nfe = 0  # type: ignore[attr-defined]

    @property
    def device(self) -> torch.device:
        device = getattr(self.prior, "device", None)
        if device is not None:
            return torch.device(device)
        for buffer in self.transform.buffers():
            return buffer.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.prior, "dtype", torch.float32)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WaveletLatentPrior:
        """Move the inner network (in place) and the transform's matrices (device only: they stay float64)."""
        if isinstance(self.prior, NetworkPrior):
            self.prior.to(device=device, dtype=dtype)
        elif device is not None and hasattr(self.prior, "to"):
            self.prior = self.prior.to(device)  # type: ignore[attr-defined]
        if device is not None:
            self.transform.to(device=device)
        return self

    @property
    def spatial_divisor(self) -> int:
        """Image sizes must be multiples of this: the network's divisor times ``2**levels`` of the wavelet."""
        inner = getattr(self.prior, "spatial_divisor", 1)
        return inner * 2 ** _spatial_levels(self.transform)

    def with_shape(self, image_shape: Sequence[int]) -> WaveletLatentPrior:
        """The same network (shared) on images of another spatial size: the transform rebuilt for that size.

        For a plain ``WaveletTransform``, or a ``WaveletTransform @ SpectralTransform`` (cubes; the spectral basis
        is kept), with an inner prior that has ``with_shape`` (a ``NetworkPrior``).
        """
        if not hasattr(self.prior, "with_shape"):
            raise ValueError("with_shape needs a NetworkPrior inside the WaveletLatentPrior")
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != len(self.image_shape) or shape[0] != self.image_shape[0]:
            raise ValueError(f"image_shape must keep the channels and rank of {self.image_shape}, got {shape}")
        transform = _resized_transform(self.transform, shape).to(self.device)
        new = copy.copy(self)
        new.prior = self.prior.with_shape(transform.y_shape)  # type: ignore[attr-defined]
        new.transform = transform
        new.x_shape, new.image_shape = tuple(transform.y_shape), shape
        return new

    def _network_prior(self, what: str) -> NetworkPrior:
        if not isinstance(self.prior, NetworkPrior):
            raise AttributeError(f"{what}: the latent prior is a {type(self.prior).__name__}, not a NetworkPrior")
        return self.prior

    def __repr__(self) -> str:
        return f"WaveletLatentPrior(image_shape={self.image_shape}, transform={self.transform!r}, prior={self.prior!r})"


def _resized_transform(transform: LinearOperator, shape: tuple[int, ...]) -> LinearOperator:
    """``transform`` rebuilt for images of ``shape`` (same wavelet, levels, mode; same spectral basis)."""
    if isinstance(transform, WaveletTransform):
        return WaveletTransform(shape, transform.wavelet, transform.levels, transform.mode)
    outer, inner = getattr(transform, "outer", None), getattr(transform, "inner", None)
    if isinstance(outer, WaveletTransform) and isinstance(inner, SpectralTransform):
        spectral = SpectralTransform(inner.basis, shape[1:])
        return _resized_transform(outer, (spectral.y_shape[0], *shape[1:])) @ spectral
    raise ValueError(
        "with_shape needs a WaveletTransform or a WaveletTransform @ SpectralTransform inside the WaveletLatentPrior, "
        f"got {type(transform).__name__}"
    )


def _spatial_levels(transform: LinearOperator) -> int:
    """Spatial downsampling levels of a transform (0 for purely spectral ones)."""
    if isinstance(transform, WaveletTransform):
        return transform.levels
    outer, inner = getattr(transform, "outer", None), getattr(transform, "inner", None)
    if outer is not None and inner is not None:
        return _spatial_levels(outer) + _spatial_levels(inner)
    return 0
