"""The network prior: a MONAI ``DiffusionModelUNet`` (2D or 3D) trained for noise prediction on the VP schedule.

How images move in and out of the prior's space
-----------------------------------------------
A network is trained on normalised data (e.g. intensities in [0, 1] mapped to [-1, 1]). The prior carries that
map as :class:`Normalisation` and works **in the normalised space**: ``denoise`` takes and returns normalised
tensors. A pipeline maps a physical image ``u`` in with ``x = prior.normalisation.forward(u)`` and results back
with ``u = prior.normalisation.inverse(x)``. For a linear measurement ``y = A u + n`` in physical units,
``u = (x - offset) / scale``, so the operator seen in prior space is ``A((x - offset) / scale)`` (affine; for
complex-as-two-channel data the offset is 0 and the map stays linear).

Network evaluations are counted in ``prior.nfe`` (one per ``denoise`` call, whatever the batch size). Samplers
read the counter before and after a run and report the difference; ``reset_nfe()`` sets it to 0.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..schedule import VPSchedule

__all__ = ["Normalisation", "NetworkPrior", "build_unet", "Prediction", "UNET_DEFAULTS"]

Prediction = Literal["epsilon", "sample", "v"]

# invdiff's default small UNet (research/ALGORITHMS.md section 7: ~1.06 M parameters, ~1 s per batch-16 step on
# 2 CPU cores); any DiffusionModelUNet argument may be overridden.
UNET_DEFAULTS: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [32, 64, 64],
    "attention_levels": [False, False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 32,
    "num_head_channels": 32,
}
_CONDITIONAL = ("with_conditioning", "cross_attention_dim", "num_class_embeds")


@dataclass(frozen=True)
class Normalisation:
    """Affine map from data units to the prior's space: ``forward(u) = scale * u + offset``.

    Args:
        scale: multiplier, nonzero (2.0 for data in [0, 1] mapped to [-1, 1]).
        offset: added after scaling (-1.0 for [0, 1] -> [-1, 1]; keep 0 for complex or two-channel data).
        description: free text recorded in checkpoints (how raw images were brought to data units, e.g.
            "divide by the 99.5th percentile of the foreground, clip to [0, 1]").
    """

    scale: float = 1.0
    offset: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise TypeError(f"Normalisation: {name} must be a finite number, got {value!r}")
        if self.scale == 0 or abs(self.scale) == float("inf") or abs(self.offset) == float("inf"):
            raise ValueError(f"Normalisation: need a finite nonzero scale and finite offset, got {self.scale}, {self.offset}")

    def forward(self, u: Tensor) -> Tensor:
        """Data units -> prior space."""
        return u * self.scale + self.offset

    def inverse(self, x: Tensor) -> Tensor:
        """Prior space -> data units."""
        return (x - self.offset) / self.scale

    def to_config(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "offset": float(self.offset), "description": self.description}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Normalisation:
        unknown = sorted(set(config) - {"scale", "offset", "description"})
        if unknown:
            raise ValueError(f"normalisation: unknown key(s) {unknown}; expected scale, offset, description")
        return cls(float(config.get("scale", 1.0)), float(config.get("offset", 0.0)), str(config.get("description", "")))


def _unet_parameters() -> set[str]:
    from monai.networks.nets import DiffusionModelUNet

    return {n for n in inspect.signature(DiffusionModelUNet.__init__).parameters if n != "self"}


def resolve_unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``UNET_DEFAULTS`` updated with ``config``, as a JSON-able dict (lists, not tuples).

    Raises:
        ValueError: a key that is not a ``DiffusionModelUNet`` argument, or a conditional network
            (invdiff priors are unconditional).
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"network config must be a mapping, got {type(config).__name__}")
    allowed = _unet_parameters()
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"network config: unknown key(s) {unknown}; DiffusionModelUNet takes {sorted(allowed)}")
    out = dict(UNET_DEFAULTS)
    out.update(config)
    for key in _CONDITIONAL:
        if out.get(key):
            raise ValueError(f"network config: {key}={out[key]!r} is not supported; invdiff priors are unconditional")
    if out["spatial_dims"] not in (2, 3):
        raise ValueError(f"network config: spatial_dims must be 2 or 3, got {out['spatial_dims']!r}")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def build_unet(config: Mapping[str, Any]) -> nn.Module:
    """Build a MONAI ``DiffusionModelUNet`` from a JSON-able config (missing keys from ``UNET_DEFAULTS``).

    Args:
        config: ``DiffusionModelUNet`` keyword arguments, e.g. ``{"spatial_dims": 2, "in_channels": 2,
            "out_channels": 2, "channels": [32, 64, 64]}``.

    Returns:
        The network, parameters initialised from the global torch RNG (wrap in ``torch.random.fork_rng`` and
        seed there for a reproducible initialisation).
    """
    from monai.networks.nets import DiffusionModelUNet

    resolved = resolve_unet_config(config)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in resolved.items()}
    try:
        return DiffusionModelUNet(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"network config {resolved} is invalid: {err}") from err


class NetworkPrior:
    """A trained diffusion network as a :class:`~invdiff.priors.base.Prior`.

    ``denoise(x_t, t)`` runs the network under ``torch.no_grad`` (samplers never backpropagate through it) at the
    network's dtype and returns ``E[x0 | x_t]`` in the input's dtype, through the schedule conversions.

    Args:
        network: a MONAI ``DiffusionModelUNet`` (any module with ``forward(x, timesteps)``).
        schedule: the VP schedule it was trained on.
        x_shape: per-item shape it was trained on, ``(C, H, W)`` or ``(C, D, H, W)``; C = 2 for complex images
            as (real, imaginary) channels. Other spatial sizes are accepted if each side is divisible by
            ``2 ** (levels - 1)`` (the UNet is fully convolutional).
        normalisation: data units <-> prior space (module docstring).
        prediction: what the network outputs: ``"epsilon"`` (noise), ``"sample"`` (x0) or ``"v"`` (velocity).
        network_config: the JSON-able config it was built from (stored in checkpoints).
        provenance: where the weights came from (set by ``load_prior`` from the checkpoint JSON).
        clip: if set, ``denoise`` clamps ``x0_hat`` to [-clip, clip] (DDPM's ``clip_sample``; use 1.0 for data
            clipped to [-1, 1] in the prior space). Small priors give wild ``x0_hat`` at high noise; the shipped
            brain prior's unconditional samples diverge without it. Never for complex/two-channel data.

    Attributes:
        nfe: number of network evaluations so far (one per ``denoise`` call).
    """

    def __init__(
        self,
        network: nn.Module,
        schedule: VPSchedule,
        *,
        x_shape: Sequence[int],
        normalisation: Normalisation | None = None,
        prediction: Prediction = "epsilon",
        network_config: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        clip: float | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not isinstance(schedule, VPSchedule):
            raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
        shape = tuple(int(s) for s in x_shape)
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ValueError(f"x_shape must be (C, H, W) or (C, D, H, W) with positive sizes, got {tuple(x_shape)}")
        if prediction not in ("epsilon", "sample", "v"):
            raise ValueError(f"prediction must be 'epsilon', 'sample' or 'v', got {prediction!r}")
        self.network = network.eval()
        self.schedule = schedule
        self.x_shape = shape
        self.normalisation = normalisation if normalisation is not None else Normalisation()
        self.prediction: Prediction = prediction
        self.network_config = dict(network_config) if network_config is not None else None
        self.provenance = dict(provenance) if provenance is not None else {}
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        self.clip = clip
        self.nfe = 0
        channels = getattr(network, "block_out_channels", None)
        self._divisor = 2 ** (len(channels) - 1) if channels is not None else 1

    # ---- shape ------------------------------------------------------------------------------
    @property
    def spatial_divisor(self) -> int:
        """Every spatial size the network takes must be a multiple of this (``2 ** (levels - 1)``)."""
        return self._divisor

    def with_shape(self, x_shape: Sequence[int]) -> NetworkPrior:
        """The same network (shared, not copied) as a prior on images of another size.

        The UNet is fully convolutional, so a prior trained at 64x64 also denoises 128x128 images
        (at the scale it learned); the channel count must stay the same.
        """
        shape = tuple(int(s) for s in x_shape)
        if len(shape) != len(self.x_shape) or shape[0] != self.x_shape[0]:
            raise ValueError(f"x_shape must keep the channels and rank of {self.x_shape}, got {shape}")
        bad = [s for s in shape[1:] if s < 1 or s % self._divisor]
        if bad:
            raise ValueError(f"spatial sizes {shape[1:]} must be positive multiples of {self._divisor}")
        new = copy.copy(self)
        new.x_shape = shape
        return new

    # ---- device / dtype ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> NetworkPrior:
        """Move the network in place (like ``nn.Module.to``) and return ``self``."""
        self.network.to(device=device, dtype=dtype)
        return self

    def reset_nfe(self) -> None:
        self.nfe = 0

    # ---- the Prior protocol --------------------------------------------------------------------
    def _check(self, x_t: Tensor, t: Tensor) -> Tensor:
        if not isinstance(x_t, Tensor) or x_t.is_complex():
            raise TypeError("x_t must be a real tensor (complex images as two channels: torch.view_as_real + movedim)")
        if x_t.ndim != len(self.x_shape) + 1 or x_t.shape[1] != self.x_shape[0]:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)}; this prior expects (B, *{self.x_shape})")
        bad = [s for s in x_t.shape[2:] if s % self._divisor]
        if bad:
            raise ValueError(
                f"x_t spatial shape {tuple(x_t.shape[2:])} must be divisible by {self._divisor} in every dimension"
            )
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x_t.shape[0]},), got {tuple(t.shape)}")
        return t

    def predict(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Raw network output at the network's dtype (epsilon, x0 or v according to ``prediction``)."""
        t = self._check(x_t, t)
        with torch.no_grad():
            dev, dt = self.device, self.dtype
            out = self.network(x_t.to(device=dev, dtype=dt), timesteps=t.to(device=dev, dtype=dt))
        self.nfe += 1
        return out

    def denoise(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``E[x0 | x_t]`` (normalised space).

        Args:
            x_t: (B, *x_shape) real, any float dtype; returned in the same dtype.
            t: (B,) times in [0, T-1], possibly fractional (passed to the network as float timesteps).
        """
        out = self.predict(x_t, t).to(device=x_t.device, dtype=x_t.dtype)
        t = torch.as_tensor(t, device=x_t.device).expand(x_t.shape[0])
        if self.prediction == "epsilon":
            x0 = self.schedule.x0_from_eps(x_t, out, t)
        elif self.prediction == "v":
            x0 = self.schedule.x0_from_eps(x_t, self.schedule.eps_from_v(x_t, out, t), t)
        else:
            x0 = out
        return x0.clamp(-self.clip, self.clip) if self.clip is not None else x0

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.network.parameters())
        return (
            f"NetworkPrior(x_shape={self.x_shape}, prediction={self.prediction!r}, params={params:,}, "
            f"schedule={self.schedule.kind}/{self.schedule.T}, normalisation=({self.normalisation.scale}, "
            f"{self.normalisation.offset}))"
        )
