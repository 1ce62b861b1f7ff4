"""The LightningModule that trains a diffusion prior, and the callbacks of a training run.

Loss (Ho et al. 2020, eq. 14): ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps``,
``L = mean (net(x_t, t) - target)²`` with target ``eps`` (``"epsilon"``), ``x0`` (``"sample"``) or
``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (``"v"``). AdamW. EMA of the weights after every optimiser step with the
warm-up ``decay = min(ema_decay, (1 + step) / (10 + step))`` (research/ALGORITHMS.md section 7: without a warm-up
a short run keeps a large share of the random initialisation). The EMA network is what gets exported.

Latent training (``latent={"wavelet": ..., "levels": ...}``): ``diffusion_loss`` takes batches in the image
(prior) space and encodes them with the orthonormal ``WaveletTransform`` first (outside autocast, in at least
float32: the transform is exact, only the network runs at low precision), so the same loss, EMA, validation and
export run on latent coefficients; ``ema_prior`` is then a ``WaveletLatentPrior``.

Randomness: the network is initialised inside ``torch.random.fork_rng`` (the caller's global RNG is untouched);
noise and times come from a module-owned ``torch.Generator`` seeded with ``seed + 1000 * global_rank`` whose
state is stored in Lightning checkpoints, so a resumed run draws what an uninterrupted run would.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..priors.ancestral import ancestral_sample
from ..priors.network import NetworkPrior, Normalisation, build_unet, resolve_unet_config
from ..priors.wavelet import WaveletLatentPrior
from ..schedule import VPSchedule
from .config import build_latent_transform

__all__ = ["DiffusionPriorModule", "ExportPrior", "PrintProgress", "SampleGrid", "sample_images", "save_grid"]


class DiffusionPriorModule(L.LightningModule):
    """Trains a MONAI ``DiffusionModelUNet`` as a diffusion prior.

    Args:
        network: ``build_unet`` config.
        schedule: ``VPSchedule`` keyword arguments.
        x_shape: per-item image shape (C, H, W) or (C, D, H, W).
        normalisation: ``Normalisation.to_config()`` of the data.
        prediction: network target.
        lr: AdamW learning rate. weight_decay: AdamW weight decay.
        ema_decay: the EMA decay after warm-up.
        seed: initialisation and noise seed.
        latent: ``None`` (train on images) or ``WaveletTransform`` keyword arguments (``{"wavelet": "haar",
            "levels": 1}``, optional ``"mode"``; for cubes optionally ``"spectral"`` with a fitted basis, see
            ``config.build_latent_transform``): train on its coefficients; ``network`` must then take the
            latent's channels.
    """

    def __init__(
        self,
        network: Mapping[str, Any],
        schedule: Mapping[str, Any],
        x_shape: Sequence[int],
        normalisation: Mapping[str, Any],
        prediction: str = "epsilon",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        seed: int = 0,
        latent: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        network = resolve_unet_config(network)
        self.save_hyperparameters(
            {"network": network, "schedule": dict(schedule), "x_shape": list(x_shape),
             "normalisation": dict(normalisation), "prediction": prediction, "lr": lr,
             "weight_decay": weight_decay, "ema_decay": ema_decay, "seed": seed,
             "latent": dict(latent) if latent is not None else None}
        )
        # a submodule, so it follows the module's device; its matrices are not saved (they follow from the config)
        self.transform = build_latent_transform(tuple(x_shape), latent) if latent is not None else None
        self.latent_shape = tuple(self.transform.y_shape) if self.transform is not None else tuple(x_shape)
        if network["in_channels"] != self.latent_shape[0] or network["out_channels"] != self.latent_shape[0]:
            raise ValueError(
                f"network in/out channels ({network['in_channels']}, {network['out_channels']}) must equal the "
                f"channels of the training items, {self.latent_shape[0]} (shape {self.latent_shape})"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_unet(network)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.schedule = VPSchedule(**schedule)
        self.normalisation = Normalisation.from_config(normalisation)
        self._generator: torch.Generator | None = None
        self._pending_state: Tensor | None = None
        self.recent_losses: deque[float] = deque(maxlen=100)
        self.last_val_loss: float | None = None
        self.wall_s = 0.0  # accumulated training wall time, kept across resumes
        self._t0: float | None = None

    # ---- randomness --------------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator:
        if self._generator is None or self._generator.device != self.device:
            g = torch.Generator(device=self.device).manual_seed(self.hparams.seed + 1000 * self.global_rank)
            if self._pending_state is not None:
                g.set_state(self._pending_state)
                self._pending_state = None
            self._generator = g
        return self._generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["invdiff"] = {
            "generator_state": self.generator.get_state(),
            "wall_s": self._wall(),
            "recent_losses": list(self.recent_losses),
            "last_val_loss": self.last_val_loss,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("invdiff", {})
        self._pending_state = extra.get("generator_state")
        self._generator = None
        self.wall_s = float(extra.get("wall_s", 0.0))
        self.recent_losses.extend(extra.get("recent_losses", []))
        self.last_val_loss = extra.get("last_val_loss")

    def _wall(self) -> float:
        return self.wall_s + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self.wall_s = self._wall()
        self._t0 = None

    # ---- loss -----------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """An image batch -> what the network models: the wavelet latent, or the batch itself."""
        if self.transform is None:
            return x
        low = x.dtype in (torch.float16, torch.bfloat16)  # "*-true" half precision: encode in float32, hand back
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.transform(x.float() if low else x).to(x.dtype)

    def diffusion_loss(self, net: torch.nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        """Mean squared error of the network target on one batch of images (encoded to the latent first when
        training a latent prior), noise and times from ``generator``."""
        x0 = self.encode(x0)
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.T, (b,), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
        x_t = self.schedule.add_noise(x0, eps, t)
        if self.hparams.prediction == "epsilon":
            target = eps
        elif self.hparams.prediction == "sample":
            target = x0
        else:
            target = self.schedule.v_from_eps(x_t, eps, t)
        out = net(x_t, timesteps=t)
        return F.mse_loss(out.float(), target.float())

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(self.net, batch, self.generator)
        self.recent_losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch.shape[0])
        return loss

    @torch.no_grad()
    def update_ema(self) -> None:
        step = self.global_step
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))
        ema = list(self.ema.parameters())
        online = list(self.net.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in online], 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            b_ema.copy_(b)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # the EMA follows each optimiser step here rather than in on_train_batch_end, which Lightning runs after the
        # callbacks' hooks: checkpoints, exports and sample grids of step N then see the EMA of step N
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        # fixed noise and times per batch: validation losses are comparable across evaluations
        g = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        g_online = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        loss = self.diffusion_loss(self.ema, batch, g)
        loss_online = self.diffusion_loss(self.net, batch, g_online)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch.shape[0], sync_dist=True)
        self.log("val/loss_online", loss_online, batch_size=batch.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("val/loss")
        if value is not None:
            self.last_val_loss = float(value)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ---- the trained prior -------------------------------------------------------------------
    def ema_prior(self) -> NetworkPrior | WaveletLatentPrior:
        """The EMA network as a prior (shares the module's EMA weights; no copy); a ``WaveletLatentPrior`` when
        training on wavelet latents."""
        prior = NetworkPrior(
            self.ema,
            self.schedule,
            x_shape=self.latent_shape,
            normalisation=self.normalisation,
            prediction=self.hparams.prediction,
            network_config=self.hparams.network,
        )
        return prior if self.transform is None else WaveletLatentPrior(prior, self.transform)

    def train_loss(self) -> float | None:
        """Mean of the last (up to) 100 training-batch losses."""
        return float(np.mean(self.recent_losses)) if self.recent_losses else None


def save_grid(x: Tensor, normalisation: Normalisation, path: str | Path, ncol: int | None = None) -> Path:
    """Write a batch as one PNG grid: data units clipped to [0, 1]; 3D: the central slice; 2 channels: magnitude;
    cubes (more channels): false colour from the bands at 85 / 50 / 15 % of the band axis.

    Args:
        x: (B, C, H, W) or (B, C, D, H, W) in the prior space.
    """
    from PIL import Image

    u = normalisation.inverse(x.detach().float().cpu())
    if u.ndim == 5:
        u = u[:, :, u.shape[2] // 2]
    if u.shape[1] > 2:
        bands = u.shape[1]
        img = u[:, [round(f * (bands - 1)) for f in (0.85, 0.5, 0.15)]].permute(0, 2, 3, 1)
    else:
        img = u.pow(2).sum(1).sqrt() if u.shape[1] == 2 else u[:, 0]
    img = img.clamp(0, 1).numpy()
    b, h, w = img.shape[:3]
    ncol = ncol or int(np.ceil(np.sqrt(b)))
    nrow = int(np.ceil(b / ncol))
    pad = 2
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, *img.shape[3:]), dtype=np.float32)
    for i in range(b):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(path)
    return path


class SampleGrid(L.Callback):
    """Every ``every`` steps, draw ``count`` ancestral samples from the EMA prior (fixed seed) into a PNG grid."""

    def __init__(self, folder: str | Path, every: int, steps: int, count: int = 16, seed: int = 0) -> None:
        self.folder, self.every, self.steps, self.count, self.seed = Path(folder), every, steps, count, seed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            assert isinstance(pl_module, DiffusionPriorModule)
            prior = pl_module.ema_prior()
            g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            x = sample_images(prior, self.count, self.steps, g)
            save_grid(x, prior.normalisation, self.folder / f"step_{step:07d}.png")


def _clip(prior: NetworkPrior | WaveletLatentPrior) -> float | None:
    """Clamp x0_hat to the data range when the data were clipped to [0, 1] (one channel, [-1, 1] prior space)."""
    n = prior.normalisation
    channels = prior.image_shape[0] if isinstance(prior, WaveletLatentPrior) else prior.x_shape[0]
    return 1.0 if (channels == 1 and n.scale == 2.0 and n.offset == -1.0) else None


def sample_images(
    prior: NetworkPrior | WaveletLatentPrior, count: int, steps: int, generator: torch.Generator
) -> Tensor:
    """``count`` ancestral samples in the image (prior) space, x0_hat clamped to the data range (``_clip``); a
    latent prior is sampled in its latent with the clamp applied to the decoded image, then decoded."""
    clip = _clip(prior)
    if isinstance(prior, WaveletLatentPrior):
        clipped = WaveletLatentPrior(prior.prior, prior.transform, clip=clip)
        return prior.decode(ancestral_sample(clipped, (count, *prior.x_shape), steps, generator))
    return ancestral_sample(prior, (count, *prior.x_shape), steps, generator, clip=clip)


class ExportPrior(L.Callback):
    """Every ``every`` steps, save the EMA prior with ``provenance(module)`` (rank zero only)."""

    def __init__(self, stem: str | Path, every: int, provenance: Any) -> None:
        self.stem, self.every, self.provenance = Path(stem), every, provenance

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            from ..priors.checkpoint import save_prior

            assert isinstance(pl_module, DiffusionPriorModule)
            save_prior(pl_module.ema_prior(), self.stem, self.provenance(pl_module))


class PrintProgress(L.Callback):
    """Plain one-line progress every ``every`` steps (for log files, where a progress bar is unreadable)."""

    def __init__(self, every: int, total: int) -> None:
        self.every, self.total = every, total
        self._t: float | None = None
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero and self._t is not None:
            assert isinstance(pl_module, DiffusionPriorModule)
            rate = (time.perf_counter() - self._t) / max(step - self._step0, 1)
            val = f"{pl_module.last_val_loss:.4f}" if pl_module.last_val_loss is not None else "-"
            print(
                f"step {step}/{self.total}  train_loss(avg100) {pl_module.train_loss():.4f}  val_loss(ema) {val}  "
                f"{rate:.2f} s/step  eta {rate * (self.total - step) / 60:.1f} min",
                flush=True,
            )
