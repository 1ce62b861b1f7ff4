"""MONAI dictionary transforms: reconstruction as one step of a MONAI pipeline.

They compose with ``LoadImaged`` / ``EnsureChannelFirstd`` before and ``SaveImaged`` after:
the image is a channel-first ``(1, X, Y)`` or ``(1, X, Y, Z)`` (Meta)Tensor; volumes are
reconstructed slice by slice along the last axis; outputs keep the input's metadata (affine), so
``SaveImaged`` writes them in the input's geometry.

``RetrospectiveReconstructd`` simulates measurements of the image and reconstructs them (the
``invdiff reconstruct`` retrospective mode); it writes ``<key>_reconstruction``, ``<key>_std`` (when
the sampler gives one), ``<key>_pseudo_inverse`` and ``<key>_metrics`` into the dictionary.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from .jobs import reconstruct_volume

__all__ = ["RetrospectiveReconstructd"]


def _to_slices(image: Any, key: Hashable) -> tuple[np.ndarray, int]:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim not in (3, 4) or array.shape[0] != 1:
        raise ValueError(f"{key!r} must be channel-first (1, X, Y) or (1, X, Y, Z), got shape {array.shape}; add EnsureChannelFirstd")
    if array.ndim == 3:
        return array[0][None].astype(np.float64), 3
    return np.moveaxis(array[0], -1, 0).astype(np.float64), 4  # (Z, X, Y)


def _from_slices(volume: np.ndarray, ndim: int, like: Any) -> Any:
    array = volume[0][None] if ndim == 3 else np.moveaxis(volume, 0, -1)[None]
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    if hasattr(like, "copy_meta_from"):  # MetaTensor: keep affine and metadata for SaveImaged
        from monai.data import MetaTensor

        return MetaTensor(tensor, meta=dict(like.meta))
    return tensor


class RetrospectiveReconstructd(MapTransform):
    """Simulate ``operator`` measurements of ``keys`` and reconstruct them with ``sampler`` and ``prior``.

    Args:
        keys: image keys (channel-first).
        operator, operator_options, sampler, sampler_options, prior, noise_sigma, seed, device, batch_size:
            as for ``invdiff reconstruct`` (``pipelines.jobs.reconstruct_volume``).
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        *,
        operator: str = "mri",
        operator_options: Mapping[str, Any] | None = None,
        sampler: str = "red-diff",
        sampler_options: Mapping[str, Any] | None = None,
        prior: str = "brain-mri",
        noise_sigma: float = 0.01,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)

        from .reconstruct import load_prior_for, resolve_device

        self.device = resolve_device(device)
        self.prior = load_prior_for(prior, sampler, self.device)
        self.settings = {
            "operator": operator,
            "operator_options": dict(operator_options or {}),
            "sampler": sampler,
            "sampler_options": dict(sampler_options or {}),
            "noise_sigma": noise_sigma,
            "seed": seed,
            "batch_size": batch_size,
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            slices, ndim = _to_slices(d[key], key)
            result = reconstruct_volume(slices, prior=self.prior, device=self.device, **self.settings)
            d[f"{key}_reconstruction"] = _from_slices(result.reconstruction, ndim, d[key])
            d[f"{key}_pseudo_inverse"] = _from_slices(result.pseudo_inverse, ndim, d[key])
            if result.std is not None:
                d[f"{key}_std"] = _from_slices(result.std, ndim, d[key])
            d[f"{key}_metrics"] = result.metrics
        return d
