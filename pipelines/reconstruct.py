"""Reconstruct scans slice by slice: simulate or read measurements, run a sampler, map back to intensities.

Units. A scan's intensities are mapped to *data units* by ``u = (v - low) / (high - low)`` with
``low = min(0, min v)`` and ``high`` the 99.5th percentile, the preprocessing the shipped prior was
trained with; the prior's own ``Normalisation`` then maps data units to its space (``[-1, 1]``).
Measurements are simulated in data units, and ``noise_sigma`` is in data units too (per real
component for k-space). For a linear operator and the affine prior normalisation
``x_p = s u + o``, the measurement in prior space is ``y_p = s y + o A(1)`` with noise ``s sigma``;
samplers run entirely in prior space.

Slices are reconstructed in batches of ``batch_size`` (bounded memory). Every random stream
(operator parameters, measurement noise, each batch's sampler) has its own seed derived from
``seed`` with ``numpy.random.SeedSequence``, so the same seed gives the same output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invdiff.operators import CenterCrop, DecomposableOperator, GaussianNoise, LinearOperator, Operator
from invdiff.priors import WaveletLatentPrior
from invdiff.samplers import Reconstruction, sampler_for_prior

from .options import check_options, keyword_options, lookup
from .registry import CUBE_OPERATORS, CUBE_SAMPLERS, OPERATORS, SAMPLERS, with_preset

__all__ = [
    "IntensityWindow",
    "SliceResult",
    "check_pairing",
    "derived_seed",
    "prepare_problem",
    "prior_spatial_dims",
    "reconstruct_slices",
    "resolve_device",
]

# Options the pipeline itself passes to samplers; users cannot set them through --option.
_RESERVED_SAMPLER_OPTIONS = ("noise", "generator", "callback", "progress")


def derived_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one random stream (``stream`` = its numeric id path)."""
    return int(np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator_for(seed: int, *stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(seed, *stream))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return resolved


@dataclass(frozen=True)
class IntensityWindow:
    """``u = (v - low) / (high - low)``: scan intensities <-> data units."""


    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityWindow:
        """``high`` = the 99.5th percentile of the foreground (values above 5% of the range), as the
        shipped prior's training data were scaled (``invdiff.training.brain_data``); nothing is clipped."""
        values = np.asarray(values, dtype=np.float64)
        low = min(0.0, float(values.min()))
        foreground = values[values > low + 0.05 * (float(values.max()) - low)]
        high = float(np.percentile(foreground, 99.5)) if foreground.size else float(values.max())
        if not high > low:
            high = float(values.max())
        if not high > low:
            raise ValueError(f"the image is constant ({low}); nothing to reconstruct")
        return cls(low, high)

    @classmethod
    def of_cube(cls, values: np.ndarray) -> IntensityWindow:
        """``low = min(0, min v)``, ``high`` = the maximum: cube samplers (DDS2M) restore values in ``[0, 1]`` and
        clip their output there, so the whole range must map inside it (a percentile would clip highlights)."""
        values = np.asarray(values, dtype=np.float64)
        low, high = min(0.0, float(values.min())), float(values.max())
        if not high > low:
            raise ValueError(f"the cube is constant ({low}); nothing to restore")
        return cls(low, high)

    def to_data(self, v: np.ndarray) -> np.ndarray:
        return (v - self.low) / (self.high - self.low)

    def to_scan(self, u: np.ndarray) -> np.ndarray:
        return u * (self.high - self.low) + self.low

    @property
    def width(self) -> float:
        return self.high - self.low


def check_pairing(operator: str, sampler: str) -> None:
    """Refuse operator/sampler pairs that cannot work, before any data or prior is loaded.

    Hyperspectral operators (``hsi-*``) measure cubes, for which no trained prior ships, so they need a prior-free
    cube sampler (``dds2m``); that sampler needs an operator on cubes with a closed-form SVD.
    """
    lookup(OPERATORS, operator, "operator")
    lookup(SAMPLERS, sampler, "sampler")
    cube_operators = ", ".join(sorted(CUBE_OPERATORS))
    if sampler in CUBE_SAMPLERS and operator not in CUBE_OPERATORS:
        raise ValueError(
            f"sampler {sampler!r} restores hyperspectral cubes; it needs an hsi operator ({cube_operators}), "
            f"got operator {operator!r}"
        )
    if operator in CUBE_OPERATORS and sampler not in CUBE_SAMPLERS:
        raise ValueError(
            f"operator {operator!r} measures hyperspectral cubes, for which no trained prior ships; use the prior-free "
            f"sampler {' or '.join(sorted(CUBE_SAMPLERS))}, got sampler {sampler!r}"
        )


def build_operator(name: str, options: Mapping[str, Any], shape: tuple[int, ...], *, seed: int) -> Operator:
    builder = lookup(OPERATORS, name, "operator")
    check_options(builder, options, owner=f"operator {name!r}", reserved=("generator",))
    return builder(shape, generator=generator_for(seed, 0), **options)


def canvas_operator(op: Operator, divisor: int) -> Operator:
    """``op`` on a canvas padded up to multiples of ``divisor`` (what the network needs), cropped back."""
    spatial = op.x_shape[1:]
    canvas = tuple(math.ceil(s / divisor) * divisor for s in spatial)
    if canvas == tuple(spatial):
        return op
    return op @ CenterCrop((op.x_shape[0], *canvas), spatial)


def crop_to(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    if tuple(x.shape[-len(spatial) :]) == spatial:
        return x
    return CenterCrop(tuple(x.shape[1:]), spatial)(x)


@dataclass(frozen=True)
class Problem:
    """A measurement problem in prior space, ready for a sampler."""

    prior: Any
    op: Operator
    noise: GaussianNoise
    spatial: tuple[int, ...]  # the true image grid (the operator may act on a padded canvas)
    noise_sigma: float  # the noise in data units (``noise`` is in prior units)


# SMC integrates the reverse SDE over the whole time range, where a small prior's x0_hat is wild at high noise;
# without a clamp of x0_hat to the data range (DDPM's clip_sample) the unmeasured pixels run away: on the dipy slice,
# 70 % inpainting gave -17 dB (clamped: 21.9 dB) and x4 super-resolution 8.5 dB. RED-Diff keeps its estimate near
# the data and is left as trained.
SAMPLER_PRIOR_CLIP: dict[str, float] = {"smc": 1.0}


def load_prior_for(prior: Any, sampler: str, device: torch.device | str = "cpu") -> Any:
    """``load_prior`` for a name or path (an object is used as given), with the clamp ``sampler`` needs."""
    from invdiff.priors import load_prior

    if not isinstance(prior, (str, Path)):
        return prior
    return load_prior(prior, device=device, clip=SAMPLER_PRIOR_CLIP.get(sampler))


def prior_spatial_dims(prior: Any) -> int:
    """2 for priors of images, 3 for priors of volumes (a latent prior counts by its image shape)."""
    return len(getattr(prior, "image_shape", prior.x_shape)) - 1


def starting_estimate(op: LinearOperator, y: Tensor, noise_sigma: float) -> Tensor:
    """The least-squares image the samplers start from and the reports show as "pseudo-inverse".

    With a closed-form SVD, singular values below ``10 * noise_sigma`` are dropped (truncated SVD): a component
    with gain ``s`` carries ``s |x_i|`` of signal against ``noise_sigma`` of noise, and coefficients of images in
    data units are rarely above 0.1, so weaker components are mostly noise. The exact pseudo-inverse amplifies the
    noise of a Gaussian blur by 10^5 (-62 dB on a brain slice at noise 0.01; 25.5 dB truncated); masks, Cartesian
    MRI and downsampling have no singular values in that range and get exactly their pseudo-inverse. Operators
    without an SVD get ``op.pinv`` (conjugate gradients).
    """
    if not isinstance(op, DecomposableOperator):
        return op.pinv(y)
    largest = float(op.singular_values().abs().max())
    relative_cutoff = 10 * noise_sigma / largest if largest > 0 else 0.0  # op.pinv's tol is relative to the largest
    return op.pinv(y, tol=min(1.0, max(1e-6, relative_cutoff)))


def prepare_problem(prior: Any, op: Operator, noise_sigma: float) -> Problem:
    """Put ``op`` on the prior's canvas and express the noise in prior space."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"the pipeline maps intensities affinely, which needs a linear operator; got {type(op).__name__}")
    spatial = tuple(op.x_shape[1:])
    divisor = getattr(prior, "spatial_divisor", 1)
    canvas_op = canvas_operator(op, divisor)
    shaped = prior.with_shape(canvas_op.x_shape) if hasattr(prior, "with_shape") else prior
    scale = float(prior.normalisation.scale) if hasattr(prior, "normalisation") else 1.0
    sigma = float(noise_sigma) * abs(scale)
    if not sigma > 0:
        raise ValueError(f"noise_sigma must be > 0 (the likelihood needs it), got {noise_sigma}")
    return Problem(shaped, canvas_op, GaussianNoise(sigma), spatial, float(noise_sigma))


def measurement_to_prior(problem: Problem, y: Tensor) -> Tensor:
    """``y_p = s y + o A(1)`` for measurements ``y`` of data-unit images (see the module docstring)."""
    norm = getattr(problem.prior, "normalisation", None)
    if norm is None:
        return y
    ones = torch.ones((1, *problem.op.x_shape), dtype=y.real.dtype if y.is_complex() else y.dtype, device=y.device)
    return norm.scale * y + norm.offset * problem.op(ones)


def image_to_prior(problem: Problem, u: Tensor) -> Tensor:
    norm = getattr(problem.prior, "normalisation", None)
    return u if norm is None else norm.forward(u)


def image_from_prior(problem: Problem, x: Tensor) -> Tensor:
    norm = getattr(problem.prior, "normalisation", None)
    return x if norm is None else norm.inverse(x)


def std_from_prior(problem: Problem, std: Tensor) -> Tensor:
    norm = getattr(problem.prior, "normalisation", None)
    return std if norm is None else std / abs(norm.scale)


@dataclass
class SliceResult:
    """Per-slice outputs in data units, ``(S, C, *spatial)`` NumPy arrays."""

    estimate: np.ndarray
    std: np.ndarray | None
    pinv: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)
    sampler_options: dict[str, Any] = field(default_factory=dict)  # what the sampler ran with (preset + user's)


@dataclass(frozen=True)
class BatchOutput:
    """One batch's results in data units on the true grid (CPU tensors ``(b, C, *spatial)``)."""

    index: int
    estimate: Tensor
    std: Tensor | None
    pinv: Tensor
    nfe: float
    wall_s: float


class BatchReconstructor:
    """Reconstructs batch ``index`` of slices: the unit of work of the loop and of ``Trainer.predict``.

    Batch ``i`` draws from its own generator (seed stream ``(2, i)``), so results depend on the seed and
    the batch size, not on the device count or scheduling.
    """

    def __init__(self, problem: Problem, *, sampler: str, sampler_options: Mapping[str, Any], seed: int) -> None:
        # A wavelet-latent prior runs any sampler in its latent (the operator composed with the inverse
        # transform); "wavelet-latent" names RED-Diff there and insists on such a prior.
        latent = isinstance(problem.prior, WaveletLatentPrior)
        if sampler == "wavelet-latent" and not latent:
            raise ValueError(
                "sampler 'wavelet-latent' needs a wavelet-latent prior (--prior brain-mri-wavelet or one trained "
                f"with latent: {{wavelet: haar}}), got a {type(problem.prior).__name__}"
            )
        preset = "wavelet-latent" if latent and sampler in ("red-diff", "wavelet-latent") else sampler
        sampler = "red-diff" if sampler == "wavelet-latent" else sampler
        self.sampler_fn = lookup(SAMPLERS, sampler, "sampler")
        check_options(self.sampler_fn, sampler_options, owner=f"sampler {sampler!r}", reserved=_RESERVED_SAMPLER_OPTIONS)
        self.problem, self.sampler_options, self.seed = problem, with_preset(preset, dict(sampler_options)), seed
        # Samplers that take a starting point get the pseudo-inverse in data units (zero-filled
        # intensities) mapped to prior space; the prior's offset would otherwise leak into unobserved pixels.
        self.takes_init = "init" in keyword_options(self.sampler_fn) and "init" not in sampler_options

    def __call__(self, index: int, y_data: Tensor, device: torch.device) -> BatchOutput:
        problem = self.problem
        prior = problem.prior.to(device) if hasattr(problem.prior, "to") else problem.prior
        op = problem.op.to(device)
        y_data = y_data.to(device)
        pinv = starting_estimate(op, y_data, problem.noise_sigma)
        options = dict(self.sampler_options, init=image_to_prior(problem, pinv)) if self.takes_init else self.sampler_options
        result: Reconstruction = sampler_for_prior(self.sampler_fn, prior)(
            prior, op, measurement_to_prior(problem, y_data), noise=problem.noise,
            generator=generator_for(self.seed, 2, index, device=device), **options,
        )
        std = None if result.std is None else crop_to(std_from_prior(problem, result.std), problem.spatial).cpu()
        return BatchOutput(
            index, crop_to(image_from_prior(problem, result.x), problem.spatial).cpu(), std,
            crop_to(pinv, problem.spatial).cpu(), float(result.diagnostics.get("nfe", 0)),
            float(result.diagnostics.get("wall_s", 0.0)),
        )


def reconstruct_slices(
    problem: Problem,
    y: Tensor,
    *,
    sampler: str,
    sampler_options: Mapping[str, Any],
    seed: int,
    batch_size: int,
    device: torch.device,
    devices: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SliceResult:
    """Run the sampler over slices ``y`` (``(S, *y_shape)`` in data units) in batches of ``batch_size``.

    ``devices=None`` runs the batches in this process on ``device``; ``devices=N`` spreads them over N
    devices (GPUs, or CPU processes) with Lightning ``Trainer.predict`` (``pipelines.distributed``).
    Either way the results are the same: each batch has its own random stream.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reconstructor = BatchReconstructor(problem, sampler=sampler, sampler_options=sampler_options, seed=seed)
    batches = [(i, y[start : start + batch_size]) for i, start in enumerate(range(0, y.shape[0], batch_size))]
    if devices is None:
        outputs = []
        for index, y_batch in batches:
            outputs.append(reconstructor(index, y_batch, device))
            if progress is not None:
                progress(min((index + 1) * batch_size, y.shape[0]), y.shape[0])
    else:
        from .distributed import predict_batches

        outputs = predict_batches(reconstructor, batches, devices=devices, accelerator=device.type)
    outputs.sort(key=lambda out: out.index)
    stds = [out.std for out in outputs if out.std is not None]
    return SliceResult(
        estimate=torch.cat([out.estimate for out in outputs]).double().numpy(),
        std=torch.cat(stds).double().numpy() if stds else None,
        pinv=torch.cat([out.pinv for out in outputs]).double().numpy(),
        diagnostics={
            "nfe_per_batch": sum(out.nfe for out in outputs) / max(1, len(outputs)),
            "sampler_wall_s": sum(out.wall_s for out in outputs),
            "batches": len(outputs),
            "devices": devices or 1,
        },
        sampler_options=dict(reconstructor.sampler_options),
    )


def simulate_slices(op: Operator, images: Tensor, noise_sigma: float, *, seed: int) -> Tensor:
    """``y_s = A u_s + noise`` per slice, each slice's noise from its own stream ``(1, s)``."""
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    noise = GaussianNoise(float(noise_sigma))
    clean = op(images)
    return torch.cat([noise.sample(clean[s : s + 1], generator=generator_for(seed, 1, s)) for s in range(clean.shape[0])])

