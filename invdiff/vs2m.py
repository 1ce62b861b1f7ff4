"""VS2M, the variational spatio-spectral module of DDS2M (Miao et al., ICCV 2023): untrained networks.

A cube ``X̂`` (bands, H, W) is a rank-``r`` linear mixture, unfolded as ``X̂ (HW × bands) = A (HW × r) · E (r × bands)``:

* **spatial** factor ``A``: ``r`` deep-image-prior "skip" U-Nets (Ulyanov et al. 2018), each fed its own fixed
  1-channel uniform-noise image and giving one abundance-like map;
* **spectral** factor ``E``: ``r`` fully connected networks ``bands → 128 → 256 → 256 → 128 → bands`` (ReLU6), each
  fed its own fixed uniform-noise vector of length ``bands``.

The networks are never pre-trained: DDS2M fits them to the diffusion chain of one measurement (``samplers/dds2m.py``).

Implementation: the ``r`` spatial U-Nets run side by side as **one grouped network** (``Conv2d(groups=r)``; channel
blocks are group-contiguous and skip concatenations are done per group), which is exactly ``r`` independent nets but
one convolution call per layer instead of ``r``; likewise the ``r`` MLPs are batched matrix products. MONAI's
``BasicUNet`` is not used: it has a fixed five-level layout with transposed-convolution upsampling and no grouped form,
so ``r`` copies of it would cost ``r`` times the kernel launches and differ from the DIP skip-net of the paper
(bilinear upsampling, average-pool downsampling, 1×1 skip branches, reflection padding, LeakyReLU, no output sigmoid).

Configurations: ``PAPER_SPATIAL`` is the paper's ``[16, 32, 64, 128, 128, 128]`` channels, skips ``[0, 0, 4, 4, 4, 4]``,
kernels ``[7, 7, 5, 5, 3, 3]`` (needs ``H, W >= 128``; about 10x slower per step than the default on CPU);
``CPU_SPATIAL`` (the default) is a three-level ``[8, 8, 16]`` net with skips ``[4, 4, 4]`` and kernels
``[3, 3, 3]``: about 0.25 s per Adam step for rank 10 on a 128 x 128 x 31 cube with one thread of a shared 2-core
EPYC (0.44 s for ``[8, 16, 32]``, whose restorations at 64 x 64 were within 0.3 dB of it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CPU_SPATIAL", "PAPER_SPATIAL", "SpatialConfig", "VS2M", "tv3d"]


@dataclass(frozen=True)
class SpatialConfig:
    """Layout of each DIP skip U-Net: one entry per level (level 0 is the full resolution).

    Attributes:
        channels: feature channels per level (each level halves the resolution once).
        skip_channels: channels of the 1×1 skip branch per level (0 = no skip at that level).
        kernels: odd convolution kernel size per level.
    """

    channels: tuple[int, ...]
    skip_channels: tuple[int, ...]
    kernels: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 1 or len(self.skip_channels) != n or len(self.kernels) != n:
            raise ValueError(
                "SpatialConfig: channels, skip_channels and kernels need one entry per level (same length >= 1), got "
                f"{len(self.channels)}, {len(self.skip_channels)}, {len(self.kernels)}"
            )
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"SpatialConfig: channels must be integers >= 1, got {self.channels}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.skip_channels):
            raise ValueError(f"SpatialConfig: skip_channels must be integers >= 0, got {self.skip_channels}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"SpatialConfig: kernels must be odd integers >= 1, got {self.kernels}")

    @property
    def levels(self) -> int:
        return len(self.channels)


PAPER_SPATIAL = SpatialConfig((16, 32, 64, 128, 128, 128), (0, 0, 4, 4, 4, 4), (7, 7, 5, 5, 3, 3))
CPU_SPATIAL = SpatialConfig((8, 8, 16), (4, 4, 4), (3, 3, 3))
SPECTRAL_HIDDEN: tuple[int, ...] = (128, 256, 256, 128)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _conv(groups: int, cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(groups * cin, groups * cout, k, padding=k // 2, padding_mode="reflect", groups=groups)


def _cat_groups(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """Concatenate two group-contiguous feature maps per group, so a grouped conv sees [a_g, b_g] for group g."""
    n, _, h, w = a.shape
    out = torch.cat([a.reshape(n, groups, -1, h, w), b.reshape(n, groups, -1, h, w)], dim=2).reshape(n, -1, h, w)
    return out.contiguous(memory_format=torch.channels_last)


class _Level(nn.Module):
    """One level of the DIP skip-net for ``groups`` networks at once (input at this level's resolution)."""

    def __init__(self, groups: int, cin: int, cfg: SpatialConfig, i: int) -> None:
        super().__init__()
        c, s, k = cfg.channels[i], cfg.skip_channels[i], cfg.kernels[i]
        g = groups
        self.groups = g
        self.skip = (
            nn.Sequential(_conv(g, cin, s, 1), nn.BatchNorm2d(g * s), _act()) if s > 0 else None
        )
        self.down = nn.Sequential(
            _conv(g, cin, c, k), nn.BatchNorm2d(g * c), _act(),
            _conv(g, c, c, k), nn.BatchNorm2d(g * c), _act(),
        )
        self.deeper = _Level(g, c, cfg, i + 1) if i + 1 < cfg.levels else None
        deep_out = cfg.channels[i + 1] if i + 1 < cfg.levels else c
        merged = s + deep_out
        self.up = nn.Sequential(
            nn.BatchNorm2d(g * merged),
            _conv(g, merged, c, k), nn.BatchNorm2d(g * c), _act(),
            _conv(g, c, c, 1), nn.BatchNorm2d(g * c), _act(),
        )

    def forward(self, x: Tensor) -> Tensor:
        d = self.down(F.avg_pool2d(x, 2, ceil_mode=True))
        if self.deeper is not None:
            d = self.deeper(d)
        d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.skip is not None:
            d = _cat_groups(self.skip(x), d, self.groups)
        return self.up(d)


class _GroupedSkipNet(nn.Module):
    """``groups`` independent 1-in/1-out DIP skip U-Nets evaluated as one grouped network."""

    def __init__(self, groups: int, cfg: SpatialConfig) -> None:
        super().__init__()
        self.body = _Level(groups, 1, cfg, 0)
        self.head = nn.Conv2d(groups * cfg.channels[0], groups, 1, groups=groups)

    def forward(self, z: Tensor) -> Tensor:
        # channels_last: oneDNN's grouped convolutions are 2-3x faster on CPU in this layout when the
        # per-group channel count is not a multiple of 8 (measured on the 2-core test machine).
        return self.head(self.body(z.contiguous(memory_format=torch.channels_last)))


class _GroupedMLP(nn.Module):
    """``groups`` independent MLPs ``n → hidden... → n`` with ReLU6, as batched matrix products."""

    def __init__(self, groups: int, n: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [n, *hidden, n]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(groups, a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(groups, 1, b)) for b in sizes[1:]])

    def forward(self, z: Tensor) -> Tensor:  # z: (groups, 1, n) -> (groups, 1, n)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.baddbmm(b, z, w)
            if i < len(self.weights) - 1:
                z = F.relu6(z)
        return z


class VS2M(nn.Module):
    """The rank-``r`` spatio-spectral network ``X̂ = A_θ · E_ζ`` of DDS2M, untrained.

    Args:
        shape: cube shape ``(bands, H, W)``.
        rank: number of spatial/spectral network pairs ``r`` (paper: 10).
        spatial: U-Net layout (``CPU_SPATIAL`` default; ``PAPER_SPATIAL`` for the paper's nets).
        spectral_hidden: hidden widths of each spectral MLP (paper: 128, 256, 256, 128).
        input_scale: the fixed network inputs are uniform in ``[0, input_scale)`` (DIP uses 0.1).
        generator: the only source of randomness for the weights and the fixed inputs (CPU generator).
        dtype: parameter dtype.

    Shapes:
        ``forward()`` -> ``(1, bands, H, W)``; ``factors()`` -> ``A (r, H, W)``, ``E (r, bands)``.

    Raises:
        ValueError: bad shape or rank, or a spatial size too small for the number of levels.

    Examples:
        >>> net = VS2M((8, 16, 16), rank=3, generator=torch.Generator().manual_seed(0))
        >>> tuple(net().shape)
        (1, 8, 16, 16)
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        rank: int = 10,
        spatial: SpatialConfig = CPU_SPATIAL,
        spectral_hidden: Sequence[int] = SPECTRAL_HIDDEN,
        input_scale: float = 0.1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"VS2M: shape must be a cube (bands, H, W) of positive integers, got {shape}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"VS2M: rank must be an integer >= 1, got {rank!r}")
        if not isinstance(spatial, SpatialConfig):
            raise TypeError(f"VS2M: spatial must be a SpatialConfig (e.g. CPU_SPATIAL), got {type(spatial).__name__}")
        bands, h, w = shape
        # Reflection padding needs every level's map larger than half its kernel.
        for i, k in enumerate(spatial.kernels):
            side = min(math.ceil(h / 2 ** (i + 1)), math.ceil(w / 2 ** (i + 1)))
            if side <= k // 2:
                raise ValueError(
                    f"VS2M: spatial size {(h, w)} is too small for {spatial.levels} levels with kernels {spatial.kernels} "
                    f"(level {i} is {side} px); use fewer levels or a larger cube"
                )
        self.shape, self.rank, self.spatial_config = shape, rank, spatial
        # nn.Module constructors draw from the global RNG; fork it so the caller's stream is untouched,
        # then draw every weight from `generator` below.
        with torch.random.fork_rng(devices=[]):
            self.spatial = _GroupedSkipNet(rank, spatial)
            self.spectral = _GroupedMLP(rank, bands, spectral_hidden)
        self._init_parameters(generator)
        u = torch.rand((1, rank, h, w), generator=generator, dtype=torch.float64) * input_scale
        v = torch.rand((rank, 1, bands), generator=generator, dtype=torch.float64) * input_scale
        self.register_buffer("spatial_input", u)
        self.register_buffer("spectral_input", v)
        self.to(dtype)
        self.spatial.to(memory_format=torch.channels_last)

    def _init_parameters(self, generator: torch.Generator | None) -> None:
        """PyTorch's default layer initialisation (uniform, bound 1/sqrt(fan_in)) drawn from ``generator``."""

        def uniform_(p: Tensor, bound: float) -> None:
            with torch.no_grad():
                p.copy_((torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)

        for m in self.spatial.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                uniform_(m.weight, 1 / math.sqrt(fan_in))
                if m.bias is not None:
                    uniform_(m.bias, 1 / math.sqrt(fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for w, b in zip(self.spectral.weights, self.spectral.biases, strict=True):
            bound = 1 / math.sqrt(w.shape[1])
            uniform_(w, bound)
            uniform_(b, bound)

    def factors(self) -> tuple[Tensor, Tensor]:
        """The spatial factor ``A`` ``(r, H, W)`` and the spectral factor ``E`` ``(r, bands)``."""
        a = self.spatial(self.spatial_input)[0]
        e = self.spectral(self.spectral_input)[:, 0, :]
        return a, e

    def forward(self) -> Tensor:
        """``X̂ = A · E`` as a cube ``(1, bands, H, W)`` (no output non-linearity, as in the paper)."""
        a, e = self.factors()
        return torch.einsum("rhw,rb->bhw", a, e)[None]


def tv3d(x: Tensor) -> Tensor:
    """Anisotropic 3-D total variation (mean absolute forward difference along bands, H and W) of ``(B, bands, H, W)``."""
    return (
        (x[:, 1:] - x[:, :-1]).abs().mean()
        + (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
        + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    )
