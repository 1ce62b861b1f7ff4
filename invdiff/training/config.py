"""Training configuration: one frozen dataclass, read from a YAML/JSON file plus ``key=value`` overrides.

Unknown keys raise. Dict-valued fields (``network``, ``schedule``) take dotted overrides such as
``network.channels=[32,64,128]``; override values are parsed as YAML (``steps=2000``, ``flips=false``,
``slice_axes=[0,1,2]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["HSI_TRAINING", "TrainConfig", "build_latent_transform", "load_config", "parse_overrides"]

HSI_TRAINING = "hsi-training"  # the built-in hyperspectral training cubes (invdiff.hsi_data.TRAINING_SCENES)

Precision = Literal["32-true", "16-mixed", "bf16-mixed", "64-true", "auto"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a prior training run needs; the resolved config is saved next to the outputs.

    Data:
        data: a folder (searched recursively for NIfTI, PNG, NPY files and DICOM series folders), a single file,
            a glob pattern, the built-in ``"mni152-t1"`` (the nilearn MNI ICBM152 T1 template, needs
            ``pip install 'invdiff[data]'``), or the built-in ``"hsi-training"``: hyperspectral cubes (bands as
            channels, values in [0, 1]) of ``invdiff.hsi_data.TRAINING_SCENES`` at 128 x 128, never the
            evaluation or tuning scenes; random ``image_size``² crops are drawn from them.
        spatial_dims: 2 (volumes are sliced along ``slice_axes``) or 3 (random ``image_size``³ patches).
        zoom: 3D only: volumes are resampled by this factor before cropping (0.5 turns a 1 mm template into 2 mm
            voxels, so a patch covers more anatomy), with area averaging when shrinking.
        patches_per_volume: 3D and cubes only: random patches drawn from each volume or cube per epoch (a single
            template volume would otherwise give batches of one patch).
        image_size: side of the square training images (2D) or cubic patches (3D).
        channels: 1 (real or magnitude) or 2 (complex NPY data as real/imaginary channels); for
            ``"hsi-training"`` the number of bands (2-180).
        slice_axes: volume axes to slice along (2D).
        min_foreground: drop slices whose fraction of pixels above 5 % of the volume maximum is below this.
        percentile: intensities are divided by this percentile of the foreground, then clipped to [0, 1].
        val_fraction: fraction of images held out for the validation loss (split with ``seed``).
        flips: random left-right flips. affine: small random rotation (±10°) and scaling (±10 %).
        elastic: random 2D elastic deformation.

    Model (see ``invdiff.priors.network``): ``network`` overrides ``UNET_DEFAULTS`` (spatial_dims and channel
    counts are filled from the data options); ``schedule`` is ``VPSchedule`` keyword arguments; ``prediction`` is
    the network target. ``latent`` (e.g. ``{wavelet: haar, levels: 1}``, optional ``mode``) trains on orthonormal
    wavelet coefficients instead of pixels: each batch goes through ``WaveletTransform(x_shape, **latent)`` before
    the diffusion loss, the network's channels follow the latent (``channels * 2^(spatial_dims * levels)`` at
    ``image_size / 2^levels``) and the exported prior is a ``WaveletLatentPrior``. For cubes, ``latent.spectral``
    first maps the bands to fewer orthonormal coordinates: ``{kind: pca, rank: r}`` (the ``r`` leading singular
    vectors of the training cubes' spectra, fitted when training starts) or ``{kind: wavelet, wavelet: haar,
    levels: 1, keep: k}`` (a DWT along the bands keeping its first ``k`` rows); the network then sees
    ``r * 2^(2 * levels)`` channels.

    Optimisation: AdamW (``lr``, ``weight_decay``), ``batch_size``, ``steps`` optimiser steps, gradient-norm clip
    ``grad_clip`` (0 = off), EMA with warm-up ``decay = min(ema_decay, (1 + step) / (10 + step))``.

    Outputs: ``output_dir`` gets ``checkpoints/`` (Lightning, for resuming), ``samples/`` (PNG grids every
    ``sample_every`` steps from ``sample_steps`` ancestral steps), ``config.json``, CSV logs. The EMA prior is
    exported to ``export`` (a path stem; default ``<output_dir>/prior``) every ``export_every`` steps and at the
    end, with a final ``<export>_samples.png`` grid from ``final_sample_steps`` steps and, if ``model_card`` is
    set, a Markdown model card there (``model_card_notes`` appended).

    Hardware: Lightning ``accelerator``, ``devices``, ``num_nodes``, ``strategy`` and ``precision`` pass through
    (``precision="auto"``: ``bf16-mixed`` on GPU, ``32-true`` on CPU); ``threads`` sets ``torch.set_num_threads``.
    ``resume``: ``"auto"`` continues from ``<output_dir>/checkpoints/last.ckpt`` when present, ``"none"``
    starts afresh, anything else is a Lightning checkpoint path.
    """

    data: str
    output_dir: str = "runs/prior"
    export: str | None = None
    description: str = ""
    # data
    spatial_dims: int = 2
    zoom: float = 1.0
    patches_per_volume: int = 1
    image_size: int = 64
    channels: int = 1
    slice_axes: tuple[int, ...] = (2,)
    min_foreground: float = 0.08
    percentile: float = 99.5
    val_fraction: float = 0.1
    flips: bool = True
    affine: bool = False
    elastic: bool = False
    batch_size: int = 16
    num_workers: int = 0
    # model
    network: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "linear", "T": 1000})
    prediction: Literal["epsilon", "sample", "v"] = "epsilon"
    latent: dict[str, Any] | None = None
    # optimisation
    steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    # monitoring and outputs
    log_every: int = 50
    val_every: int = 200
    sample_every: int = 1000
    sample_steps: int = 250
    final_sample_steps: int = 1000
    checkpoint_every: int = 200
    export_every: int = 500
    model_card: str | None = None
    model_card_notes: str = ""
    progress_bar: bool = True
    # hardware
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    resume: str = "auto"

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"config: {name} must be {expected}, got {getattr(self, name)!r}")

        def pos_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= minimum, name, f"an integer >= {minimum}")

        need(isinstance(self.data, str) and bool(self.data), "data",
             f"a non-empty path, glob, 'mni152-t1' or '{HSI_TRAINING}'")
        need(self.spatial_dims in (2, 3), "spatial_dims", "2 or 3")
        if self.is_cube_data:
            need(isinstance(self.channels, int) and 2 <= self.channels <= 180 and self.spatial_dims == 2, "channels",
                 "the band count (2-180) of the 2D hyperspectral training cubes")
        else:
            need(self.channels in (1, 2), "channels", "1 or 2")
        need(isinstance(self.zoom, (int, float)) and not isinstance(self.zoom, bool) and 0 < self.zoom <= 4, "zoom",
             "a number in (0, 4]")
        need(self.spatial_dims == 3 or self.zoom == 1, "spatial_dims", f"3 when zoom ({self.zoom}) is set")
        need(self.spatial_dims == 3 or self.is_cube_data or self.patches_per_volume == 1, "spatial_dims",
             f"3 (or data 'hsi-training') when patches_per_volume ({self.patches_per_volume}) is set")
        for name in ("image_size", "batch_size", "steps", "num_nodes", "patches_per_volume"):
            pos_int(name)
        for name in ("num_workers", "log_every", "val_every", "sample_every", "checkpoint_every", "export_every"):
            pos_int(name, 0)
        pos_int("sample_steps")
        pos_int("final_sample_steps", 0)
        pos_int("seed", 0)
        object.__setattr__(self, "slice_axes", tuple(self.slice_axes))
        need(len(self.slice_axes) > 0 and all(a in (0, 1, 2) for a in self.slice_axes), "slice_axes", "axes in (0, 1, 2)")
        need(0 <= self.min_foreground < 1, "min_foreground", "in [0, 1)")
        need(0 < self.percentile <= 100, "percentile", "in (0, 100]")
        need(0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)")
        need(self.lr > 0, "lr", "> 0")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)")
        need(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        need(self.prediction in ("epsilon", "sample", "v"), "prediction", "'epsilon', 'sample' or 'v'")
        need(self.precision in ("32-true", "16-mixed", "bf16-mixed", "64-true", "auto"), "precision",
             "one of '32-true', '16-mixed', 'bf16-mixed', '64-true', 'auto'")
        need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), "threads", "None or >= 1")
        need(isinstance(self.network, dict), "network", "a mapping of DiffusionModelUNet arguments")
        need(isinstance(self.schedule, dict), "schedule", "a mapping of VPSchedule arguments")
        for key in ("spatial_dims", "in_channels", "out_channels"):
            if key in self.network:
                raise ValueError(f"config: network.{key} is set from the data options (spatial_dims, channels); remove it")
        if self.latent is not None:
            need(isinstance(self.latent, dict), "latent", "None or a mapping such as {wavelet: haar, levels: 1}")
            unknown = sorted(set(self.latent) - {"wavelet", "levels", "mode", "spectral"})
            if unknown:
                raise ValueError(
                    f"config: latent has unknown key(s) {unknown}; expected 'wavelet', 'levels', 'mode', 'spectral'"
                )
            if "spectral" in self.latent and not self.is_cube_data:
                raise ValueError(f"config: latent.spectral {self.latent['spectral']!r} needs hyperspectral cubes "
                                 f"(data: {HSI_TRAINING}), got data {self.data!r}")
            try:
                self.latent_transform()
            except (TypeError, ValueError) as err:
                raise ValueError(f"config: latent {self.latent!r} is invalid: {err}") from err

    @property
    def is_cube_data(self) -> bool:
        return self.data == HSI_TRAINING

    @property
    def export_stem(self) -> Path:
        return Path(self.export) if self.export else Path(self.output_dir) / "prior"

    def network_config(self) -> dict[str, Any]:
        channels = self.latent_shape()[0]
        return {"spatial_dims": self.spatial_dims, "in_channels": channels, "out_channels": channels, **self.network}

    def x_shape(self) -> tuple[int, ...]:
        """The image shape of one training item (``(channels, *image_size)``)."""
        return (self.channels,) + (self.image_size,) * self.spatial_dims

    def latent_transform(self) -> Any:
        """The latent transform of ``latent`` on ``x_shape()``, or ``None`` for pixel-space training. With a PCA
        spectral part, only its shape is right here (the basis is fitted on the data when training starts)."""
        if self.latent is None:
            return None
        return build_latent_transform(self.x_shape(), self.latent, shape_only=True)

    def latent_shape(self) -> tuple[int, ...]:
        """The shape the network sees: ``x_shape()``, or the wavelet latent's shape."""
        transform = self.latent_transform()
        return self.x_shape() if transform is None else tuple(transform.y_shape)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slice_axes"] = list(self.slice_axes)
        return out


def build_latent_transform(x_shape: Sequence[int], latent: Mapping[str, Any], *, shape_only: bool = False) -> Any:
    """``WaveletTransform(x_shape, wavelet, levels, mode)``, after a ``SpectralTransform`` of the bands when
    ``latent`` has ``spectral`` (``{kind: basis, basis: [[...]]}``, ``{kind: wavelet, ...}`` or ``{kind: pca,
    rank: r}``; the last needs the data, so it is only accepted with ``shape_only``, as a placeholder basis)."""
    from ..operators import SpectralTransform, WaveletTransform

    wavelet_args = {k: v for k, v in latent.items() if k != "spectral"}
    spectral = latent.get("spectral")
    if spectral is None:
        return WaveletTransform(tuple(x_shape), **wavelet_args)
    bands, spatial = int(x_shape[0]), tuple(x_shape[1:])
    kind = spectral.get("kind") if isinstance(spectral, Mapping) else None
    expected = {"basis": {"kind", "basis"}, "wavelet": {"kind", "wavelet", "levels", "keep"}, "pca": {"kind", "rank"}}
    if kind not in expected or not set(spectral) <= expected[kind]:
        raise ValueError(f"latent.spectral must be {{kind: pca, rank: r}}, {{kind: wavelet, wavelet, levels, keep}} "
                         f"or {{kind: basis, basis}}, got {spectral!r}")
    if kind == "basis":
        transform = SpectralTransform(torch.tensor(spectral["basis"], dtype=torch.float64), spatial)
    elif kind == "wavelet":
        transform = SpectralTransform.wavelet(bands, spatial, spectral.get("wavelet", "haar"),
                                              spectral.get("levels", 1), keep=spectral.get("keep"))
    else:
        rank = spectral.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= bands:
            raise ValueError(f"latent.spectral.rank must be an integer in [1, bands={bands}], got {rank!r}")
        if not shape_only:
            raise ValueError("latent.spectral {kind: pca} has no basis yet; fit it on the training cubes first")
        transform = SpectralTransform(torch.eye(bands, rank, dtype=torch.float64), spatial)
    return WaveletTransform((transform.y_shape[0], *spatial), **wavelet_args) @ transform


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text != "" else ""


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["steps=10", "network.channels=[32,64,64]"]`` -> ``{"steps": 10, "network": {"channels": [32, 64, 64]}}``."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r} has an empty key")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = _parse_value(value)
    return out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> TrainConfig:
    """Read a YAML/JSON config file (optional) and apply overrides.

    Args:
        path: ``.yaml``/``.yml``/``.json`` file with a flat mapping of ``TrainConfig`` fields.
        overrides: ``key=value`` strings or a mapping; they win over the file.

    Raises:
        FileNotFoundError: missing file. ValueError: bad syntax, unknown keys, invalid values.
    """
    base: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        text = p.read_text()
        try:
            if p.suffix == ".json":
                base = json.loads(text)
            else:
                import yaml

                base = yaml.safe_load(text) or {}
        except Exception as err:  # yaml and json raise different error types
            raise ValueError(f"config file {p} could not be parsed: {err}") from err
        if not isinstance(base, dict):
            raise ValueError(f"config file {p} must hold a mapping of options, got {type(base).__name__}")
    extra = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    merged = _merge(base, extra)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    if "data" not in merged:
        raise ValueError("config: 'data' is required (a folder, file, glob or 'mni152-t1')")
    try:
        return TrainConfig(**merged)
    except TypeError as err:
        raise ValueError(f"config: {err}") from err
