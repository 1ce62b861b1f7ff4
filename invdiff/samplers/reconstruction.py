"""What every sampler returns (``Reconstruction``) and the checks and helpers they share.

Shared conventions:

* ``x`` is the image, ``y`` the measurement, ``op`` the (noiseless) operator, ``noise`` the noise model;
  priors are over real tensors (MRI images as two channels, ``complex_channels=True`` operators).
* Batches are over measurements ``B``. Samplers with ``K`` particles fold them into the batch
  (``B * K`` rows, item-major: row ``b * K + k``) and evaluate the prior and the operator in chunks of at
  most ``batch_size`` rows, so memory stays bounded. Random numbers for all rows are drawn from the one
  ``generator`` *before* chunking, so the chunk size never changes the random stream or the result.
* The callback gets a dict with a fixed key set every step (``CALLBACK_KEYS`` plus the sampler's own keys).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..operators import GaussianNoise, Operator
from ..priors.base import Prior

__all__ = ["CALLBACK_KEYS", "Callback", "Reconstruction"]

Callback = Callable[[dict[str, Any]], None]

# Keys every sampler's callback dict has: step index (0-based), step count, time t (float), the current
# estimate x (B, *x_shape), the denoiser output x0_hat (B, *x_shape) and the data misfit (B,).
CALLBACK_KEYS: tuple[str, ...] = ("step", "steps", "t", "x", "x0_hat", "misfit")


@dataclass(frozen=True)
class Reconstruction:
    """The result of a sampler.

    Attributes:
        x: ``(B, *x_shape)`` the estimate (posterior mean for SMC, the optimised point for RED-Diff).
        samples: ``(B, K, *x_shape)`` draws or particles, or ``None`` when the method gives none.
        log_weights: ``(B, K)`` normalised log-weights of ``samples`` (``logsumexp`` over ``K`` is 0) for
            weighted particle methods, else ``None``.
        std: ``(B, *x_shape)`` per-pixel posterior standard deviation, or ``None``.
        diagnostics: tensors keyed by name; every sampler gives ``"nfe"`` (scalar: single-item denoiser
            evaluations per measurement), ``"wall_s"`` (scalar, seconds) and ``"misfit"`` (``(steps, B)``:
            ``||A(x) - y||`` per measurement and step); SMC adds ``"ess"`` ``(steps, B)``.
    """

    x: Tensor
    samples: Tensor | None = None
    log_weights: Tensor | None = None
    std: Tensor | None = None
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


# ---- argument checks --------------------------------------------------------------------------------
def check_problem(prior: Prior, op: Operator, y: Tensor, who: str) -> torch.dtype:
    """Validate ``(prior, op, y)`` once at a sampler's entry point; return the real working dtype.

    Raises:
        TypeError: ``prior`` is not a ``Prior``, ``op`` not an ``Operator``, ``op`` takes complex images,
            ``y`` not a tensor or of the wrong complexity.
        ValueError: ``prior.x_shape != op.x_shape``, ``y`` of the wrong shape, empty, or not finite.
    """
    if not isinstance(prior, Prior):
        raise TypeError(f"{who}: prior must implement the Prior protocol (schedule, x_shape, denoise), got {type(prior).__name__}")
    if not isinstance(op, Operator):
        raise TypeError(f"{who}: op must be an invdiff.operators.Operator, got {type(op).__name__}")
    if op.x_is_complex:
        raise TypeError(
            f"{who}: priors are over real tensors but {type(op).__name__} takes complex images; "
            "build the operator with complex_channels=True (real and imaginary parts as two channels)"
        )
    if tuple(prior.x_shape) != tuple(op.x_shape):
        raise ValueError(f"{who}: prior.x_shape {tuple(prior.x_shape)} differs from op.x_shape {tuple(op.x_shape)}")
    if not isinstance(y, Tensor):
        raise TypeError(f"{who}: y must be a torch.Tensor, got {type(y).__name__}")
    op.check_y(y, "y")
    if y.shape[0] < 1:
        raise ValueError(f"{who}: y must hold at least one measurement, got shape {tuple(y.shape)}")
    if not y.is_floating_point() and not y.is_complex():
        raise TypeError(f"{who}: y must be a floating-point or complex tensor, got dtype {y.dtype}")
    if not bool(torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all()):
        raise ValueError(f"{who}: y contains NaN or inf")
    return y.real.dtype if y.is_complex() else y.dtype


def check_gaussian_noise(noise: object, who: str) -> GaussianNoise:
    if not isinstance(noise, GaussianNoise):
        raise TypeError(f"{who}: noise must be an invdiff.operators.GaussianNoise, got {type(noise).__name__}")
    if not noise.sigma > 0:
        raise ValueError(f"{who}: noise.sigma must be > 0 (the likelihood of sigma=0 is degenerate), got {noise.sigma!r}")
    return noise


def check_int(name: str, value: object, who: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value: object, who: str, *, low: float = 0.0, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{who}: {name} must be a finite number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_choice(name: str, value: object, choices: tuple[str, ...], who: str) -> str:
    if value not in choices:
        raise ValueError(f"{who}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_generator(generator: object, device: torch.device, who: str) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{who}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"{who}: generator is on {generator.device} but y is on {device}; create it with torch.Generator({device.type!r})")


# ---- small maths -----------------------------------------------------------------------------------
def item_norm(v: Tensor) -> Tensor:
    """Euclidean norm of each batch item (complex-aware), shape ``(B,)``."""
    return v.abs().pow(2).flatten(1).sum(1).sqrt() if v.is_complex() else v.pow(2).flatten(1).sum(1).sqrt()


def item_dot(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product ``Re <a, b>`` of each batch item, shape ``(B,)``."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` to broadcast over ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def randn_like_shape(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
                     generator: torch.Generator | None) -> Tensor:
    """Standard normal draws; complex dtypes get unit variance in *each* of the real and imaginary parts."""
    z = torch.randn(shape, dtype=dtype, device=device, generator=generator)
    return z * math.sqrt(2.0) if dtype.is_complex else z


# ---- linear solves -------------------------------------------------------------------------------------
def cg_solve(apply: Callable[[Tensor], Tensor], rhs: Tensor, *, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Conjugate gradients for SPD ``apply`` with a per-row stop: a converged row is frozen, so a row's
    result does not depend on which other rows share its chunk. Returns ``(x, relative residual (N,))``."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = item_dot(r, r)
    b2 = item_dot(rhs, rhs).clamp_min(torch.finfo(rs.dtype).tiny)
    active = rs > tol**2 * b2
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        q = apply(p)
        pq = item_dot(p, q)
        step = torch.where(active, rs / torch.where(active, pq, torch.ones_like(pq)), torch.zeros_like(pq))
        x = x + bcast(step, x) * p
        r = r - bcast(step, r) * q
        rs_new = item_dot(r, r)
        ratio = torch.where(active, rs_new / torch.where(active, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = torch.where(bcast(active, p), r + bcast(ratio, p) * p, p)
        rs = torch.where(active, rs_new, rs)
        active = active & (rs_new > tol**2 * b2)
    return x, (rs / b2).sqrt().double()


# ---- chunked evaluation ---------------------------------------------------------------------------------
def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Row slices ``[i, i + batch_size)`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def denoise(prior: Prior, x_t: Tensor, t: float) -> Tensor:
    """``E[x0 | x_t]`` at one time for every row; no graph through the network (samplers use explicit gradients)."""
    tt = torch.full((x_t.shape[0],), float(t), dtype=torch.float64, device=x_t.device)
    with torch.no_grad():
        return prior.denoise(x_t, tt).to(x_t.dtype)


# ---- progress and callbacks -------------------------------------------------------------------------
def progress_steps(steps: int, enabled: bool, desc: str) -> Iterator[int]:
    """``range(steps)`` with a progress bar on stderr when ``enabled`` (tqdm if installed)."""
    if not enabled:
        yield from range(steps)
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        every = max(1, steps // 20)
        for i in range(steps):
            if i % every == 0 or i == steps - 1:
                print(f"\r{desc}: {i + 1}/{steps}", end="" if i < steps - 1 else "\n", file=sys.stderr, flush=True)
            yield i
        return
    yield from tqdm(range(steps), desc=desc, leave=False)


def emit(callback: Callback | None, info: dict[str, Any]) -> None:
    if callback is not None:
        callback(info)
