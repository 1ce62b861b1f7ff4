"""DDS2M: self-supervised diffusion for hyperspectral restoration (Miao, Zhang, Zhang, Tao, ICCV 2023).

No trained prior is used. A DDRM-type reverse chain (Kawar et al. 2022) runs in the spectral coordinates of the
operator's SVD ``A = U diag(s) V^T``; from the chain's start point on, its denoiser is **VS2M**
(``invdiff.vs2m.VS2M``), a rank-``r`` mixture of untrained spatial and spectral networks that is fitted to the
current chain state by a few Adam steps per reverse step, with its weights carried over (warm start) between steps.

Per reverse step ``t -> t'`` (data mapped to ``[-1, 1]``, ``sigma0 = 2 sigma``, ``st = sqrt((1 - ab_t) / ab_t)``):

1. ``x0_hat = x_t`` before the start point; afterwards fit VS2M on
   ``L = mean((sqrt(ab_t) (2 X̂ - 1) - x_t)^2) + beta_tv TV3D(2 X̂ - 1)`` and set ``x0_hat = 2 EMA(X̂) - 1``;
2. ``eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)``, ``x̄0 = V^T x0_hat``, ``ȳ = U^T y``;
3. per spectral coordinate ``i`` (``z ~ N(0, 1)``):

   * ``s_i = 0``:            ``x̄0 + sqrt(1 - eta_c^2) st' (V^T eps_hat)_i + eta_c st' z``
   * ``s_i st' < sigma0``:   ``x̄0 + sqrt(1 - eta_a^2) st' (ȳ_i - s_i x̄0_i) / sigma0 + eta_a st' z``
   * ``s_i st' >= sigma0``:  ``eta_b ȳ_i / s_i + (1 - eta_b) x̄0_i + sqrt(st'^2 - sigma0^2 eta_b^2 / s_i^2) z``
4. ``x_t' = sqrt(ab_t') V x̄'``.

The chain starts the DDRM way at ``t = T - 1`` (``x̄ ~ N(ȳ/s, st^2 - sigma0^2/s^2)`` on the observed coordinates,
``N(0, st^2)`` on the null space) and ends with a step to ``t' = -1`` (``ab = 1``, ``st' = 0``), whose state is the
output: the chain's **final** iterate, mapped back to ``[0, 1]``. Nothing is ever compared with a clean cube (the
reference code also tracks the best PSNR against ground truth; that oracle selection is deliberately absent here).

CPU budget: the paper takes all ``T`` (1000-3000) reverse steps with the network from ``T/2`` on (one Adam step per
reverse step). Here ``steps`` reverse steps are taken on an evenly spaced grid of the paper's schedule (DDRM allows
skipping), the first ``round(start_fraction * steps)`` without the network, and ``iters_per_step`` Adam steps per
network step; see ``DDS2M_PRESETS`` for the per-task defaults and their measured effect.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from ..operators import GaussianNoise, Operator
from ..operators.base import DecomposableOperator, require_svd
from ..priors.base import Prior
from ..schedule import VPSchedule
from ..vs2m import CPU_SPATIAL, SPECTRAL_HIDDEN, VS2M, SpatialConfig, tv3d
from .reconstruction import (
    Callback,
    Reconstruction,
    check_float,
    check_generator,
    check_int,
    emit,
    item_norm,
    progress_steps,
)

__all__ = ["DDS2M_PRESETS", "dds2m", "dds2m_schedule"]

_WHO = "dds2m"

# Per-task settings. Paper values (ALGORITHMS.md 4.4): T, start point T/2 (start_fraction 0.5), etas; linear beta
# 1e-4 -> 5e-3, rank 10, beta_tv 0, and all T reverse steps with one Adam step (lr 5e-4) each from T/2 on, i.e.
# 1000 / 1500 / 500 Adam steps. CPU values (steps, lr): `steps` reverse steps on an evenly spaced grid, half of them
# with the network, lr raised to 5e-3. Chosen on the held-out scene "rocket", MPSNR, with CPU_SPATIAL unless marked
# [8,16,32] (the wider net first tried); 64 x 64 x 31 unless marked 128:
#   denoising sigma 0.1, steps 800:      lr 2e-3 34.3 dB, lr 5e-3 35.1 dB (noisy input 20 dB)
#   completion 80 % voxels, sigma 0.05:  [8,16,32] steps 400: 19.6 dB (lr 2e-3), 19.7 dB (lr 5e-3), 19.6 dB (T 1000
#                                        instead of 3000), 16.9 dB (start_fraction 0.75); [8,16,32] steps 1200:
#                                        29.2 dB (lr 5e-3), 29.0 dB (lr 1e-2); CPU_SPATIAL steps 1200 lr 5e-3: 28.9 dB.
#                                        128: steps 1200: 30.2 dB; 1200 with start_fraction 0.25: 34.1 dB; 1200 with
#                                        iters_per_step 2: 32.0 dB; 2400: 36.3 dB; 2400 with start_fraction 0.25:
#                                        36.5 dB; 3000 (= T, the paper's chain): 37.5 dB
#   completion 50 % voxels, sigma 0.05, steps 800, lr 5e-3: 37.7 dB [8,16,32], 37.8 dB CPU_SPATIAL
#   super-resolution x4, sigma 0.01, steps 800: lr 2e-3 27.8 dB, lr 5e-3 28.3 dB
# The number of reverse steps matters most: with the noisy targets of the chain, VS2M fits the observed data slowly,
# and completion (which sees only the observed share of the voxels) needs the paper's full chain: 3000 steps, about
# 8 minutes for a 128 x 128 x 31 cube on one CPU thread.
DDS2M_PRESETS: dict[str, dict[str, Any]] = {
    "denoising": {"T": 2000, "steps": 800, "lr": 5e-3, "eta_a": 1.0, "eta_b": 1.0, "eta_c": 1.0},
    "completion": {"T": 3000, "steps": 3000, "lr": 5e-3, "eta_a": 0.95, "eta_b": 1.0, "eta_c": 0.95},
    "super_resolution": {"T": 1000, "steps": 800, "lr": 5e-3, "eta_a": 0.95, "eta_b": 1.0, "eta_c": 0.95},
}


def dds2m_schedule(T: int = 1000) -> VPSchedule:
    """The DDS2M noise schedule: linear beta from 1e-4 to 5e-3 over ``T`` steps."""
    return VPSchedule("linear", T=T, beta_start=1e-4, beta_end=5e-3)


def dds2m(
    prior: Prior | None,
    op: Operator,
    y: Tensor,
    *,
    noise: GaussianNoise,
    steps: int = 800,
    start_fraction: float = 0.5,
    T: int = 1000,
    eta_a: float = 0.95,
    eta_b: float = 1.0,
    eta_c: float = 0.95,
    rank: int = 10,
    lr: float = 5e-3,
    iters_per_step: int = 1,
    ema: float = 0.98,
    beta_tv: float = 0.0,
    spatial: SpatialConfig = CPU_SPATIAL,
    clip: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Reconstruction:
    """Restore hyperspectral cubes in ``[0, 1]`` with DDS2M (no trained prior).

    Args:
        prior: unused; DDS2M needs no trained prior. ``None`` (or any ``Prior``, accepted only so that the
            shared ``sample(prior, op, y, ...)`` call shape works; it is never evaluated).
        op: a ``DecomposableOperator`` (closed-form SVD) on cubes ``(bands, H, W)``, e.g.
            ``HyperspectralDenoising``, ``PixelCompletion``, ``BandCompletion``, ``HyperspectralSuperResolution``.
        y: ``(B, *op.y_shape)`` real measurements of cubes whose values lie in ``[0, 1]``.
        noise: ``GaussianNoise`` of ``y`` (sigma in the ``[0, 1]`` data units; ``sigma = 0`` is allowed).
        steps: reverse steps actually taken (evenly spaced over the ``T``-step schedule), >= 2; the network is
            fitted on ``steps - round(start_fraction * steps)`` of them (see ``DDS2M_PRESETS`` per task).
        start_fraction: share of the steps, from the noisy end, taken without the network (paper: 0.5).
        T: length of the DDS2M schedule (``dds2m_schedule(T)``; paper: 2000 denoising, 3000 completion, 1000 SR).
        eta_a, eta_b, eta_c: DDRM mixing weights in [0, 1] for the weak-data, strong-data and null-space coordinates.
        rank: VS2M rank ``r`` (paper: 10).
        lr: Adam learning rate of VS2M (paper: 5e-4 with 500-1500 network steps; 5e-3 here for fewer steps).
        iters_per_step: Adam steps per network step (paper: 1).
        ema: decay of the exponential moving average of the VS2M output used as ``x0_hat`` (paper: 0.98).
        beta_tv: weight of the 3-D total-variation term (paper: 0).
        spatial: layout of the spatial U-Nets (``invdiff.vs2m.CPU_SPATIAL`` or ``PAPER_SPATIAL``).
        clip: clip the output to ``[0, 1]``.
        generator: the only source of randomness (network weights and inputs, chain noise); on ``y``'s device.
        callback: called once per step and batch item with ``CALLBACK_KEYS`` (``x``, ``x0_hat`` in ``[0, 1]``,
            ``misfit`` ``(1,)``) plus ``"loss"`` ``(1,)`` (VS2M loss, nan before the start) and ``"item"`` (batch index);
            items are restored one after another, each with its own VS2M.
        progress: show a progress bar on stderr.

    Returns:
        ``Reconstruction`` with ``x`` ``(B, bands, H, W)`` (the final chain state in ``[0, 1]``) and diagnostics
        ``"nfe"`` (VS2M evaluations per item), ``"wall_s"``, ``"misfit"`` ``(steps, B)`` (``||A x0_hat - y||`` in
        ``[0, 1]`` units) and ``"loss"`` ``(steps, B)``.

    Raises:
        TypeError: ``op`` without a closed-form SVD, ``prior`` neither ``None`` nor a ``Prior``, ``noise`` not
            ``GaussianNoise``, complex data, a bad generator.
        ValueError: ``op`` not on cubes, ``y`` of the wrong shape (band mismatch, ``(B, H, W, bands)`` layout,
            missing batch axis), non-finite ``y``, hyperparameters out of range.

    References:
        Miao et al., "DDS2M: Self-Supervised Denoising Diffusion Spatio-Spectral Model for Hyperspectral Image
        Restoration", ICCV 2023 (arXiv 2303.06682); Kawar et al., "Denoising Diffusion Restoration Models", 2022.

    Examples:
        >>> from invdiff.operators.hyperspectral import HyperspectralDenoising
        >>> op = HyperspectralDenoising((4, 16, 16))
        >>> y = torch.full((1, 4, 16, 16), 0.5)
        >>> out = dds2m(None, op, y, noise=GaussianNoise(0.0), steps=4, rank=2,
        ...             generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(out.x, y, atol=1e-5))
        True
    """
    start = time.perf_counter()
    svd_op = _check_inputs(prior, op, y, noise)
    check_int("steps", steps, _WHO, minimum=2)
    check_float("start_fraction", start_fraction, _WHO, high=1.0, high_open=True)
    check_int("T", T, _WHO, minimum=2)
    if steps > T:
        raise ValueError(f"{_WHO}: steps must be <= T={T}, got {steps}")
    for name, value in (("eta_a", eta_a), ("eta_b", eta_b), ("eta_c", eta_c), ("ema", ema)):
        check_float(name, value, _WHO, high=1.0)
    check_int("rank", rank, _WHO)
    check_float("lr", lr, _WHO, low_open=True)
    check_int("iters_per_step", iters_per_step, _WHO)
    check_float("beta_tv", beta_tv, _WHO)
    check_generator(generator, y.device, _WHO)

    dtype = y.dtype
    schedule = dds2m_schedule(T)
    times = schedule.timesteps(steps).tolist()
    first_net_step = round(start_fraction * steps)

    ones = torch.ones((1, *svd_op.x_shape), dtype=dtype, device=y.device)
    y_pm = 2 * y - svd_op(ones)  # measurement of 2x - 1 (linear A)
    sigma0 = 2.0 * float(noise.sigma)
    s = svd_op.singular_values().to(device=y.device, dtype=dtype).expand(1, *svd_op.x_shape)
    nonzero = s > 1e-6 * s.max()
    s_safe = torch.where(nonzero, s, torch.ones_like(s))

    xs, misfits, losses = [], [], []
    for b in range(y.shape[0]):
        x, misfit, loss = _chain(
            svd_op, y_pm[b : b + 1], y[b : b + 1], s, s_safe, nonzero, sigma0, schedule, times, first_net_step,
            eta_a=eta_a, eta_b=eta_b, eta_c=eta_c, rank=rank, lr=lr, iters_per_step=iters_per_step, ema=ema,
            beta_tv=beta_tv, spatial=spatial, generator=generator, callback=callback,
            progress=progress and b == 0, item=b,
        )
        xs.append(x)
        misfits.append(misfit)
        losses.append(loss)
    x = (torch.cat(xs) + 1) / 2
    if clip:
        x = x.clamp(0, 1)
    diagnostics = {
        "nfe": torch.tensor(float((steps - first_net_step) * iters_per_step)),
        "wall_s": torch.tensor(time.perf_counter() - start),
        "misfit": torch.stack(misfits, dim=1),
        "loss": torch.stack(losses, dim=1),
    }
    return Reconstruction(x=x.detach(), diagnostics=diagnostics)


def _chain(
    op: DecomposableOperator, y_pm: Tensor, y01: Tensor, s: Tensor, s_safe: Tensor, nonzero: Tensor, sigma0: float,
    schedule: VPSchedule, times: list[float], first_net_step: int, *, eta_a: float, eta_b: float, eta_c: float,
    rank: int, lr: float, iters_per_step: int, ema: float, beta_tv: float, spatial: SpatialConfig,
    generator: torch.Generator | None, callback: Callback | None, progress: bool, item: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """One measurement's reverse chain; returns the final state in ``[-1, 1]``, misfits ``(steps,)``, losses."""
    dtype, device = y_pm.dtype, y_pm.device
    steps = len(times)

    def randn() -> Tensor:
        return torch.randn(s.shape, dtype=dtype, device=device, generator=generator)

    y_bar = op.u_adjoint(y_pm)  # zero on the null space
    _check_real(y_bar)

    # DDRM initialisation at t = T - 1 (VE scale): data mean on observed coordinates, pure noise on the null space.
    st = float(schedule.sigma(times[0]))
    var0 = (st**2 - sigma0**2 / s_safe**2).clamp_min(0)
    init_mean = torch.where(nonzero, y_bar / s_safe, torch.zeros_like(y_bar))
    init_std = torch.where(nonzero & (s * st >= sigma0), var0.sqrt(), torch.full_like(s, st))
    x_t = math.sqrt(float(schedule.alpha_bar(times[0]))) * op.v(init_mean + init_std * randn())

    net = VS2M(op.x_shape, rank=rank, spatial=spatial, spectral_hidden=SPECTRAL_HIDDEN, generator=generator,
               dtype=dtype).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ema_out: Tensor | None = None
    misfits = torch.zeros(steps, dtype=torch.float64)
    losses = torch.full((steps,), math.nan, dtype=torch.float64)

    for i in progress_steps(steps, progress, _WHO):
        t = times[i]
        ab = float(schedule.alpha_bar(t))
        if i < first_net_step:
            x0_hat = x_t  # before the start point the chain uses its own state (paper, ALGORITHMS.md 4.3 step 1)
        else:
            with torch.enable_grad():
                for _ in range(iters_per_step):
                    out = net()
                    pred = 2 * out - 1
                    loss = (math.sqrt(ab) * pred - x_t).pow(2).mean()
                    if beta_tv > 0:
                        loss = loss + beta_tv * tv3d(pred)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            losses[i] = float(loss.detach())
            out = out.detach()
            ema_out = out if ema_out is None else ema * ema_out + (1 - ema) * out
            x0_hat = 2 * ema_out - 1

        # Next time: the next grid point, or "clean" (ab = 1, st' = 0) after t = 0.
        if i + 1 < steps:
            ab_next = float(schedule.alpha_bar(times[i + 1]))
            st_next = float(schedule.sigma(times[i + 1]))
        else:
            ab_next, st_next = 1.0, 0.0
        eps_hat = (x_t - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
        x0_bar = op.v_adjoint(x0_hat)
        _check_real(x0_bar)
        z = randn()
        null_upd = x0_bar + math.sqrt(1 - eta_c**2) * st_next * op.v_adjoint(eps_hat) + eta_c * st_next * z
        weak_upd = x0_bar + eta_a * st_next * z
        if sigma0 > 0 and eta_a < 1:
            weak_upd = weak_upd + math.sqrt(1 - eta_a**2) * st_next * (y_bar - s * x0_bar) / sigma0
        strong_std = (st_next**2 - sigma0**2 * eta_b**2 / s_safe**2).clamp_min(0).sqrt()
        strong_upd = eta_b * y_bar / s_safe + (1 - eta_b) * x0_bar + strong_std * z
        strong = nonzero & (s * st_next >= sigma0)
        x_bar = torch.where(~nonzero, null_upd, torch.where(strong, strong_upd, weak_upd))
        x_t = math.sqrt(ab_next) * op.v(x_bar)

        x0_01 = (x0_hat + 1) / 2
        misfits[i] = float(item_norm(op(x0_01) - y01)[0])
        emit(callback, {
            "step": i, "steps": steps, "t": t, "x": (x_t + 1) / 2, "x0_hat": x0_01,
            "misfit": misfits[i : i + 1].clone(), "loss": losses[i : i + 1].clone(), "item": item,
        })
    return x_t, misfits, losses


def _check_inputs(prior: object, op: object, y: object, noise: object) -> DecomposableOperator:
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"{_WHO}: prior must be None (DDS2M needs no trained prior) or a Prior, got {type(prior).__name__}")
    if not isinstance(op, Operator):
        raise TypeError(f"{_WHO}: op must be an invdiff.operators.Operator, got {type(op).__name__}")
    svd_op = require_svd(op, _WHO)
    if svd_op.x_is_complex or svd_op.y_is_complex:
        raise TypeError(f"{_WHO}: hyperspectral cubes are real; {type(op).__name__} works on complex data")
    if len(svd_op.x_shape) != 3:
        raise ValueError(f"{_WHO}: op must act on cubes (bands, H, W), got op.x_shape {tuple(svd_op.x_shape)}")
    if not isinstance(noise, GaussianNoise):
        raise TypeError(f"{_WHO}: noise must be an invdiff.operators.GaussianNoise, got {type(noise).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"{_WHO}: y must be a torch.Tensor, got {type(y).__name__}")
    if y.is_complex() or not y.is_floating_point():
        raise TypeError(f"{_WHO}: y must be a real floating-point tensor, got dtype {y.dtype}")
    expected = tuple(svd_op.y_shape)
    if y.ndim == len(expected) and tuple(y.shape) == expected:
        raise ValueError(f"{_WHO}: y has shape {tuple(y.shape)} without a batch axis; pass y[None] (B, {', '.join(map(str, expected))})")
    if y.ndim == 4 and tuple(y.shape[1:]) != expected:
        if tuple(y.shape[1:]) == (expected[1], expected[2], expected[0]):
            raise ValueError(
                f"{_WHO}: y has shape {tuple(y.shape)} = (B, H, W, bands); op expects (B, bands, H, W) = (B, {', '.join(map(str, expected))}); "
                "use y.permute(0, 3, 1, 2)"
            )
        if tuple(y.shape[2:]) == expected[1:]:
            raise ValueError(
                f"{_WHO}: y has {y.shape[1]} bands but op expects {expected[0]} (op.y_shape {expected}, y shape {tuple(y.shape)})"
            )
    svd_op.check_y(y, "y")
    if y.shape[0] < 1:
        raise ValueError(f"{_WHO}: y must hold at least one measurement, got shape {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{_WHO}: y contains NaN or inf")
    return svd_op


def _check_real(coords: Tensor) -> None:
    if coords.is_complex():
        raise TypeError(f"{_WHO}: the operator's spectral coordinates are complex (Fourier-diagonal); DDS2M needs real ones")
