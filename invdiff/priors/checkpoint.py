"""Prior checkpoints: weights in safetensors plus a JSON config, loadable by shipped name or by path.

A checkpoint ``name`` is two files side by side:

- ``name.safetensors``: the network's state dict (float tensors; for trained priors the EMA weights);
- ``name.json``: ``{"format": "invdiff-prior", "format_version": 1, "network": <DiffusionModelUNet config>,
  "schedule": <VPSchedule config>, "normalisation": {...}, "x_shape": [...], "prediction": "epsilon",
  "provenance": {...}}``. Provenance is free-form (data, steps, hardware, versions, final losses, time).
  A prior trained on wavelet latents (``WaveletLatentPrior``) adds ``"latent": <transform config>``
  (``invdiff.operators.transform_to_config``); ``x_shape`` is then the latent shape the network sees, and
  ``load_prior`` rebuilds the transform and returns a ``WaveletLatentPrior``.

Shipped priors live in ``invdiff/priors/shipped/`` and are listed in ``SHIPPED``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..schedule import VPSchedule
from .network import NetworkPrior, Normalisation, build_unet, resolve_unet_config
from .wavelet import WaveletLatentPrior

__all__ = ["SHIPPED", "SHIPPED_DIR", "load_prior", "save_prior", "read_prior_config"]

FORMAT = "invdiff-prior"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
# shipped name -> file stem inside SHIPPED_DIR
SHIPPED: dict[str, str] = {"brain-mri": "brain_mri_64", "brain-mri-wavelet": "brain_mri_wavelet_64"}
_KEYS = {"format", "format_version", "network", "schedule", "normalisation", "x_shape", "prediction", "provenance"}
_OPTIONAL_KEYS = {"provenance", "latent"}


def _stem(path: str | os.PathLike[str]) -> Path:
    """``a/b.json``, ``a/b.safetensors`` or ``a/b`` -> ``a/b``."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_prior(
    prior: NetworkPrior | WaveletLatentPrior, path: str | os.PathLike[str], provenance: Mapping[str, Any] | None = None
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` (atomically; existing files are replaced).

    Args:
        prior: the prior; its ``network_config`` must be set (priors built by ``build_unet`` / ``load_prior`` /
            training have it). A ``WaveletLatentPrior`` over a ``NetworkPrior`` also records its transform.
        path: ``<stem>``, ``<stem>.json`` or ``<stem>.safetensors``; the folder is created.
        provenance: JSON-able record of where the weights came from.

    Returns:
        The ``.safetensors`` path.
    """
    from safetensors.torch import save_file

    from ..operators import transform_to_config

    latent = None
    if isinstance(prior, WaveletLatentPrior):
        latent = transform_to_config(prior.transform)
        prior = prior.prior  # type: ignore[assignment]
        if not isinstance(prior, NetworkPrior):
            raise TypeError(f"a WaveletLatentPrior is saved only over a NetworkPrior, got {type(prior).__name__}")
    if not isinstance(prior, NetworkPrior):
        raise TypeError(f"prior must be a NetworkPrior or WaveletLatentPrior, got {type(prior).__name__}")
    if prior.network_config is None:
        raise ValueError("prior.network_config is None; build the network with build_unet(config) and pass the config")
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": resolve_unet_config(prior.network_config),
        "schedule": prior.schedule.to_config(),
        "normalisation": prior.normalisation.to_config(),
        "x_shape": list(prior.x_shape),
        "prediction": prior.prediction,
        "provenance": dict(provenance or {}),
    }
    if latent is not None:
        config["latent"] = latent
    text = json.dumps(config, indent=2, sort_keys=False, default=str) + "\n"
    state = {k: v.detach().to("cpu").contiguous() for k, v in prior.network.state_dict().items()}
    weights = stem.with_suffix(".safetensors")
    _atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return weights


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        return SHIPPED_DIR / SHIPPED[name_or_path]
    p = Path(name_or_path)
    if isinstance(name_or_path, str) and not p.suffix and len(p.parts) == 1 and not _stem(p).with_suffix(".json").exists():
        raise ValueError(f"unknown shipped prior {name_or_path!r}; choose from: {', '.join(sorted(SHIPPED))} (or give a path)")
    return _stem(p)


def read_prior_config(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON config of a checkpoint (validated), without loading weights."""
    stem = _resolve(name_or_path)
    path = stem.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"prior config not found: {path}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"prior config {path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"prior config {path} is not an invdiff prior (expected \"format\": \"{FORMAT}\")")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"prior config {path}: format_version {config.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    missing = sorted(_KEYS - set(config) - _OPTIONAL_KEYS)
    if missing:
        raise ValueError(f"prior config {path} lacks key(s) {missing}")
    return config


def load_prior(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    clip: float | None = None,
) -> NetworkPrior | WaveletLatentPrior:
    """Load a prior by shipped name (``"brain-mri"``) or by path (``stem``, ``stem.json`` or ``stem.safetensors``).

    Args:
        name_or_path: a key of ``SHIPPED`` or a checkpoint path.
        device: where to put the network.
        dtype: network parameter dtype.
        clip: clamp ``x0_hat`` to [-clip, clip] in ``denoise`` (see ``NetworkPrior``); for a latent prior the
            clamp acts on the decoded image (see ``WaveletLatentPrior``).

    Returns:
        A ``NetworkPrior``, or a ``WaveletLatentPrior`` when the checkpoint records a latent transform.

    Raises:
        ValueError: unknown shipped name, corrupt JSON/safetensors, or weights that do not fit the config.
        FileNotFoundError: a checkpoint file is missing.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = _resolve(name_or_path)
    config = read_prior_config(stem)
    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"prior weights not found: {weights}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"prior weights {weights} are not a valid safetensors file: {err}") from err
    try:
        network = build_unet(config["network"])
        schedule = VPSchedule(**config["schedule"])
        normalisation = Normalisation.from_config(config["normalisation"])
        transform = _latent_transform(config.get("latent"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"prior config {stem.with_suffix('.json')} is invalid: {err}") from err
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise ValueError(f"prior weights {weights} do not match the network config: " + "; ".join(detail))
    network.load_state_dict(state)
    network.to(device=device, dtype=dtype)
    prior = NetworkPrior(
        network,
        schedule,
        x_shape=config["x_shape"],
        normalisation=normalisation,
        prediction=config["prediction"],
        network_config=config["network"],
        provenance=config.get("provenance", {}),
        clip=clip if transform is None else None,
    )
    if transform is None:
        return prior
    if tuple(transform.y_shape) != prior.x_shape:
        raise ValueError(
            f"prior config {stem.with_suffix('.json')} is invalid: the latent transform gives shape "
            f"{tuple(transform.y_shape)} but x_shape is {list(prior.x_shape)}"
        )
    return WaveletLatentPrior(prior, transform.to(device=device), clip=clip)


def _latent_transform(config: Any) -> Any:
    """The latent transform of a checkpoint config (``None`` for image-space priors)."""
    if config is None:
        return None
    from ..operators import transform_from_config

    return transform_from_config(config)
