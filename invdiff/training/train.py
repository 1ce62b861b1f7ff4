"""``train(config)``: one Lightning run from a :class:`TrainConfig` to an exported prior.

Retrain the shipped brain prior (from the repository root)::

    python -m invdiff.training --config examples/train_brain_prior.yaml
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig

__all__ = ["provenance", "train", "write_model_card"]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("invdiff", "torch", "monai", "lightning", "numpy", "nibabel", "nilearn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _hardware(trainer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "accelerator": type(trainer.accelerator).__name__ if trainer is not None else "unknown",
        "devices": trainer.num_devices if trainer is not None else 1,
        "num_nodes": trainer.num_nodes if trainer is not None else 1,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def provenance(config: TrainConfig, module: Any, datamodule: Any, trainer: Any = None) -> dict[str, Any]:
    """The provenance record stored in the exported prior's JSON."""
    n_train = len(datamodule.train_items) if datamodule is not None else None
    n_val = len(datamodule.val_items) if datamodule is not None else None
    return {
        "data": {"source": config.data, "description": config.description, "train_items": n_train,
                 "val_items": n_val, "image_size": config.image_size, "spatial_dims": config.spatial_dims,
                 "slice_axes": list(config.slice_axes), "min_foreground": config.min_foreground,
                 "percentile": config.percentile},
        "steps": int(module.global_step),
        "batch_size": config.batch_size,
        "final_train_loss": module.train_loss(),
        "final_val_loss": module.last_val_loss,
        "wall_time_s": round(module._wall(), 1),
        "hardware": _hardware(trainer if trainer is not None else getattr(module, "_trainer", None)),
        "versions": _versions(),
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
    }


def _resume_path(config: TrainConfig) -> str | None:
    if config.resume == "none":
        return None
    if config.resume == "auto":
        last = Path(config.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(config.resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {config.resume}")
    return config.resume


def _fit_spectral_basis(config: TrainConfig, datamodule: Any) -> dict[str, Any] | None:
    """``config.latent`` with a PCA spectral part replaced by its basis, fitted (deterministically) on the
    training cubes in the prior space, so the module, its checkpoints and the exported prior all carry it."""
    latent = None if config.latent is None else dict(config.latent)
    spectral = (latent or {}).get("spectral")
    if not isinstance(spectral, dict) or spectral.get("kind") != "pca":
        return latent
    from ..operators import SpectralTransform

    datamodule.setup("fit")
    unique = {id(cube): cube for cube in datamodule.train_items}.values()  # repeats are references to one cube
    cubes = datamodule.normalisation.forward(torch.stack([torch.as_tensor(c) for c in unique]).clamp(0, 1))
    basis = SpectralTransform.pca(cubes, spectral["rank"]).basis
    latent["spectral"] = {"kind": "basis", "basis": basis.tolist()}
    return latent


def train(config: TrainConfig) -> Path:
    """Train (or resume) a diffusion prior and export its EMA weights.

    Args:
        config: the run (``invdiff.training.load_config`` reads one from YAML/JSON plus overrides).

    Returns:
        Path of the exported ``<export>.safetensors`` (beside it: ``<export>.json``, ``<export>_samples.png``).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ..priors.checkpoint import save_prior
    from .data import DiffusionDataModule
    from .module import DiffusionPriorModule, ExportPrior, PrintProgress, SampleGrid, sample_images, save_grid

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see load_config), got {type(config).__name__}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    resume = _resume_path(config)

    datamodule = DiffusionDataModule(config)
    latent = _fit_spectral_basis(config, datamodule)
    module = DiffusionPriorModule(
        network=config.network_config(),
        schedule=config.schedule,
        x_shape=config.x_shape(),
        normalisation=datamodule.normalisation.to_config(),
        prediction=config.prediction,
        lr=config.lr,
        weight_decay=config.weight_decay,
        ema_decay=config.ema_decay,
        seed=config.seed,
        latent=latent,
    )
    cuda = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    precision = config.precision if config.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=config.checkpoint_every or None,
                        save_last=True, save_top_k=1),
        SampleGrid(out / "samples", config.sample_every, config.sample_steps, seed=config.seed),
        ExportPrior(config.export_stem, config.export_every,
                    lambda m: provenance(config, m, datamodule, m.trainer)),
    ]
    if not config.progress_bar:
        callbacks.append(PrintProgress(config.log_every, config.steps))
    trainer = L.Trainer(
        max_steps=config.steps,
        max_epochs=-1,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=precision,
        gradient_clip_val=config.grad_clip or None,
        val_check_interval=config.val_every if config.val_every and config.val_fraction > 0 else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if config.val_every and config.val_fraction > 0 else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, config.log_every),
        logger=CSVLogger(str(out), name="logs"),
        callbacks=callbacks,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=config.progress_bar,
        default_root_dir=str(out),
        deterministic=False,
    )
    if resume:
        print(f"resuming from {resume}", file=sys.stderr, flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)

    stem = config.export_stem
    weights = stem.with_suffix(".safetensors")
    if trainer.is_global_zero:
        if datamodule.val_items and config.val_every:
            module.last_val_loss = _final_val_loss(module, datamodule)
        record = provenance(config, module, datamodule, trainer)
        prior = module.ema_prior()
        grid = None
        if config.final_sample_steps:
            g = torch.Generator(device=module.device).manual_seed(config.seed)
            x = sample_images(prior, 16, config.final_sample_steps, g)
            grid = save_grid(x, prior.normalisation, Path(f"{stem}_samples.png"), ncol=4)
            record["samples_png"] = grid.name
            record["samples_steps"] = config.final_sample_steps
        weights = save_prior(prior, stem, record)
        if config.model_card:
            write_model_card(stem.with_suffix(".json"), Path(config.model_card), config.model_card_notes)
    return weights


def _final_val_loss(module: Any, datamodule: Any) -> float:
    """Validation loss of the final EMA weights (same fixed noise as during training)."""
    losses, weights = [], []
    module.eval()
    with torch.no_grad():
        for i, batch in enumerate(datamodule.val_dataloader()):
            batch = batch.to(module.device)
            g = torch.Generator(device=module.device).manual_seed(10_000 + i)
            losses.append(float(module.diffusion_loss(module.ema, batch, g)))
            weights.append(batch.shape[0])
    return float(sum(v * w for v, w in zip(losses, weights, strict=True)) / sum(weights))


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "unknown"


def write_model_card(json_path: Path, md_path: Path, extra: str = "") -> Path:
    """Render a Markdown model card from an exported prior's JSON (provenance, network, schedule)."""
    cfg = json.loads(Path(json_path).read_text())
    prov = cfg.get("provenance", {})
    data = prov.get("data", {})
    net = cfg["network"]
    hw = prov.get("hardware", {})
    params = "unknown"
    try:
        from ..priors.checkpoint import load_prior

        prior = load_prior(Path(json_path))
        params = f"{sum(p.numel() for p in prior.network.parameters()):,}"
    except (OSError, ValueError):
        pass

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [
        f"# Model card: `{Path(json_path).stem}`",
        "",
        f"{data.get('description', '')}".strip(),
        "",
        "| field | value |",
        "|---|---|",
        f"| weights | `{Path(json_path).with_suffix('.safetensors').name}` (EMA weights, safetensors) + `{Path(json_path).name}` |",
        f"| network | MONAI `DiffusionModelUNet`, {net['spatial_dims']}D, channels {net['channels']}, "
        f"attention {net['attention_levels']}, {net['num_res_blocks']} res block(s), {params} parameters |",
        f"| prediction | {cfg['prediction']} |",
        f"| schedule | VP {cfg['schedule']['kind']} beta {cfg['schedule']['beta_start']}..{cfg['schedule']['beta_end']}, T = {cfg['schedule']['T']} |",
        f"| resolution | x_shape {cfg['x_shape']} |",
        f"| normalisation | prior space = {cfg['normalisation']['scale']} * u + {cfg['normalisation']['offset']}; u: {cfg['normalisation']['description']} |",
        f"| training data | {data.get('source')}: {data.get('train_items')} training / {data.get('val_items')} validation images, slice axes {data.get('slice_axes')}, min foreground {data.get('min_foreground')} |",
        f"| steps | {prov.get('steps')} optimiser steps, batch {prov.get('batch_size')} |",
        f"| final losses | train (mean of last 100 batches) {fmt(prov.get('final_train_loss'))}, validation (EMA) {fmt(prov.get('final_val_loss'))} |",
        f"| hardware | {hw.get('accelerator')} x{hw.get('devices')}, {hw.get('cpu')}, {hw.get('cpu_count')} CPU cores, {hw.get('torch_threads')} torch threads{', ' + hw['gpu'] if 'gpu' in hw else ''} |",
        f"| wall time | {_minutes(prov.get('wall_time_s'))} of training (excluding data preparation and the final grid) |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in prov.get('versions', {}).items())} |",
        f"| written | {prov.get('written')} |",
    ]
    if prov.get("samples_png"):
        lines.append(f"| sample grid | `{prov['samples_png']}` ({prov.get('samples_steps')} ancestral DDPM steps, EMA weights) |")
    if extra:
        lines += ["", extra.strip()]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n")
    return md_path
