"""Posterior sampling in an orthonormal wavelet (or spectral) latent: any sampler, run on ``z = W x``.

With ``x = W^T z`` the measurement ``y = A x + n`` is ``y = A' z + n`` for ``A' = A ∘ W^T`` (``op @
Synthesis(W)``), a ``LinearOperator`` with the exact adjoint ``A'^T = W A^T`` whenever ``A`` is linear
(non-linear operators compose too; their gradients come from autograd through ``W^T``). So the inner
sampler (``red_diff``, ``smc``, ...) runs *unchanged* on the latent prior and ``A'``, and its results are
mapped back with ``W^T``:

* the estimate ``x = W^T z_hat`` (for SMC the weighted mean commutes with the linear decoder);
* particles/samples decoded one by one;
* the per-pixel standard deviation recomputed from the *decoded* particles with their weights. It cannot be
  obtained from the latent per-coefficient std: ``Var[x_i] = sum_jk W_ji W_ki Cov[z_j, z_k]`` needs the
  cross-covariances, which the particles carry and a marginal std does not. A sampler that returns a std but
  no samples gets ``std=None`` here;
* callbacks see image-space ``x``, ``x0_hat`` and ``particles`` (decoded); the misfit is the same in both.

Orthonormality also makes the noise, the VP marginal ``N(0, I)`` and the likelihood identical in both
spaces, so a Gaussian latent prior ``N(m, S)`` gives exactly the posterior of the image prior ``N(W^T m,
W^T S W)`` (tests/test_wavelet_sampler.py checks this against the closed form). With a partially isometric
spectral transform (``rank < bands``) the reconstruction lies in the kept spectral subspace.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..operators import LinearOperator, Operator, Synthesis, is_orthonormal_transform
from ..priors.base import Prior
from ..priors.wavelet import WaveletLatentPrior
from .reconstruction import Callback, Reconstruction, emit
from .red_diff import red_diff
from .smc import smc

__all__ = ["sampler_for_prior", "wavelet_latent"]

SAMPLERS: dict[str, Callable[..., Reconstruction]] = {"red_diff": red_diff, "smc": smc}


def wavelet_latent(
    prior: WaveletLatentPrior | Prior,
    op: Operator,
    y: Tensor,
    *,
    noise: Any,
    sampler: str | Callable[..., Reconstruction] = "red_diff",
    transform: LinearOperator | None = None,
    init: Tensor | str | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    **options: Any,
) -> Reconstruction:
    """Run ``sampler`` in the latent ``z = W x`` of a ``WaveletLatentPrior`` and return image-space results.

    Args:
        prior: a ``WaveletLatentPrior`` (its ``transform`` is ``W``), or any ``Prior`` over latents together with
            ``transform``.
        op: the image-space forward operator, ``op.x_shape == W.x_shape`` (the image shape).
        y: ``(B, *op.y_shape)`` measurements.
        noise: the measurement noise model, passed to the sampler.
        sampler: ``"red_diff"``, ``"smc"`` or a sampler function with the shared signature
            ``f(prior, op, y, *, noise, generator, callback, **options) -> Reconstruction``.
        transform: ``W`` when ``prior`` is a plain latent prior (must be ``None`` for a ``WaveletLatentPrior``,
            which carries its own).
        init: RED-Diff's start, in *image* space: a ``(B, *image_shape)`` tensor (encoded), or a name. With an
            orthonormal ``W``, ``"pinv"`` (RED-Diff's default for a linear ``op``) is ``W A^+ y`` with ``op``'s
            own pseudo-inverse, equal to ``(A W^T)^+ y``; other names are passed to the sampler, which applies
            them to ``op @ Synthesis(W)`` (``"tikhonov"`` and ``"adjoint"`` are the encoded image-space ones for
            an orthonormal ``W``). Only for samplers that take ``init``.
        generator: the only source of randomness.
        callback: called every step with the sampler's dict, ``x``, ``x0_hat`` and ``particles`` decoded.
        **options: the sampler's own hyperparameters (``steps``, ``lam``, ``particles``, ...).

    Returns:
        ``Reconstruction`` in image space: ``x`` ``(B, *image_shape)``; ``samples`` ``(B, K, *image_shape)``,
        ``log_weights`` and ``std`` (from the decoded samples) when the sampler gives samples; the sampler's
        diagnostics, with ``wall_s`` covering the whole call.

    Raises:
        TypeError: ``transform`` missing, given twice or not a ``LinearOperator``; ``op`` not an ``Operator``;
            unknown ``sampler`` type.
        ValueError: unknown sampler name, ``op.x_shape`` differs from the image shape, ``init`` tensor of the
            wrong shape; the sampler's own errors.

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> from invdiff.priors.gaussian import GaussianPrior
        >>> from invdiff.operators import GaussianNoise, Inpainting, WaveletTransform
        >>> w = WaveletTransform((1, 8, 8), "haar")
        >>> prior = WaveletLatentPrior(GaussianPrior.diagonal(torch.zeros(4, 4, 4), 1.0, VPSchedule()), w)
        >>> op = Inpainting(torch.ones(8, 8, dtype=torch.bool))
        >>> out = wavelet_latent(prior, op, torch.zeros(2, 1, 8, 8), noise=GaussianNoise(0.1), steps=5,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> out.x.shape
        torch.Size([2, 1, 8, 8])
    """
    who = "wavelet_latent"
    start = time.perf_counter()
    latent_prior, w = _latent_parts(prior, transform, who)
    run = _sampler(sampler, who)
    if not isinstance(op, Operator):
        raise TypeError(f"{who}: op must be an invdiff.operators.Operator, got {type(op).__name__}")
    if tuple(op.x_shape) != tuple(w.x_shape):
        raise ValueError(
            f"{who}: op.x_shape {tuple(op.x_shape)} differs from the transform's image shape {tuple(w.x_shape)}"
        )
    decoder = Synthesis(w)
    latent_op = op @ decoder
    if init is None and run is red_diff and isinstance(op, LinearOperator):
        init = "pinv"  # red_diff's own default, taken here where op.pinv's closed form is available
    if init is not None:
        options["init"] = _latent_init(init, op, w, y, who)

    def decode(z: Tensor) -> Tensor:
        return decoder(z.reshape(-1, *w.y_shape)).reshape(*z.shape[: z.ndim - len(w.y_shape)], *w.x_shape)

    def image_callback(info: dict[str, Any]) -> None:
        mapped = dict(info)
        for key in ("x", "x0_hat", "particles"):
            if isinstance(mapped.get(key), Tensor):
                mapped[key] = decode(mapped[key])
        emit(callback, mapped)

    out = run(
        latent_prior,
        latent_op,
        y,
        noise=noise,
        generator=generator,
        callback=image_callback if callback is not None else None,
        **options,
    )
    samples = decode(out.samples) if out.samples is not None else None
    std = _weighted_std(samples, out.log_weights) if samples is not None else None
    diagnostics = dict(out.diagnostics)
    diagnostics["wall_s"] = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
    return Reconstruction(
        x=decode(out.x), samples=samples, log_weights=out.log_weights, std=std, diagnostics=diagnostics
    )


def _latent_parts(prior: object, transform: object, who: str) -> tuple[Prior, LinearOperator]:
    if isinstance(prior, WaveletLatentPrior):
        if transform is not None:
            raise TypeError(f"{who}: a WaveletLatentPrior carries its transform; do not pass transform= as well")
        return prior, prior.transform
    if transform is None:
        raise TypeError(
            f"{who}: prior is a {type(prior).__name__}, not a WaveletLatentPrior; pass the latent transform "
            "as transform= (e.g. WaveletTransform(image_shape, 'haar'))"
        )
    if not isinstance(transform, LinearOperator):
        raise TypeError(f"{who}: transform must be a LinearOperator, got {type(transform).__name__}")
    if not isinstance(prior, Prior):
        raise TypeError(f"{who}: prior must implement the Prior protocol, got {type(prior).__name__}")
    return prior, transform


def _sampler(sampler: object, who: str) -> Callable[..., Reconstruction]:
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"{who}: sampler must be one of {', '.join(map(repr, sorted(SAMPLERS)))} or a function, got {sampler!r}"
            )
        return SAMPLERS[sampler]
    if not callable(sampler):
        raise TypeError(f"{who}: sampler must be a name or a sampler function, got {type(sampler).__name__}")
    return sampler  # type: ignore[return-value]


def _latent_init(init: object, op: Operator, w: LinearOperator, y: Tensor, who: str) -> Tensor | str:
    """An image-space ``init`` in latent coordinates (names: closed forms of ``op`` when ``W`` is orthonormal)."""
    if isinstance(init, Tensor):
        batch = (y.shape[0], *w.x_shape)
        if init.is_complex() or not init.is_floating_point() or tuple(init.shape) != batch:
            raise ValueError(
                f"{who}: init must be a real tensor of shape {batch} (B, *image_shape), got "
                f"{init.dtype} {tuple(init.shape)}"
            )
        return w(init.to(device=y.device, dtype=y.real.dtype))
    if init == "pinv" and isinstance(op, LinearOperator) and is_orthonormal_transform(w):
        # (A W^T)^+ = W A^+ for orthogonal W, and op.pinv may have a closed form that the composition lacks
        return w(op.pinv(y).to(y.real.dtype))
    return init  # type: ignore[return-value]


def _weighted_std(samples: Tensor, log_weights: Tensor | None) -> Tensor:
    """Per-pixel std of ``(B, K, *shape)`` samples under normalised ``log_weights`` (uniform when ``None``)."""
    b, k = samples.shape[:2]
    if log_weights is None:
        w = torch.full((b, k), 1.0 / k, dtype=samples.dtype, device=samples.device)
    else:
        w = torch.softmax(log_weights, dim=1).to(samples.dtype)
    w = w.view(b, k, *([1] * (samples.ndim - 2)))
    mean = (w * samples).sum(1, keepdim=True)
    return (w * (samples - mean).pow(2)).sum(1).sqrt()


def sampler_for_prior(sampler: Callable[..., Reconstruction], prior: object) -> Callable[..., Reconstruction]:
    """``sampler`` as it must run with ``prior``: unchanged, or in the latent of a ``WaveletLatentPrior`` (with the
    image-space arguments and results of ``wavelet_latent``)."""
    if isinstance(prior, WaveletLatentPrior):
        return functools.partial(wavelet_latent, sampler=sampler)
    return sampler
