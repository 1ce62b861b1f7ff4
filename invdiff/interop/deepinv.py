"""deepinv interoperability: operators <-> physics, priors <-> denoisers (deepinv >= 0.5).

So deepinv's DPS, DiffPIR and DDRM run on invdiff priors, and invdiff samplers run on deepinv physics:

* ``to_deepinv_physics(op, noise)`` -> ``deepinv.physics.LinearPhysics`` (``A``, ``A_adjoint``, ``A_dagger`` from
  ``op``, ``op.adjoint`` and ``op.pinv``); a ``DecomposableOperator`` becomes a ``DecomposablePhysics`` (``U``,
  ``U_adjoint``, ``V``, ``V_adjoint`` and the singular values as ``mask``), which DDRM needs.
* ``from_deepinv_physics(physics, example)`` -> ``(LinearOperator, noise)``.
* ``to_deepinv_denoiser(prior)`` -> a ``deepinv.models.Denoiser``; ``from_deepinv_denoiser(model, x_shape)`` -> a
  ``Prior``.
* ``run_deepinv_sampler(name, prior, op, y, sigma=, steps=)``: deepinv's ``"DPS"``, ``"DiffPIR"`` or ``"DDRM"`` on an
  invdiff prior and operator in one call (what ``benchmarks/harness.py`` runs).

Conventions (read from deepinv 0.5.0's source)
----------------------------------------------
Denoiser contract: ``D(x, sigma) = E[x0 | x0 + sigma n]``, ``n ~ N(0, I)``, with ``x`` in deepinv's image range
(``[0, 1]`` for its own denoisers) and ``sigma`` a float or a ``(B,)`` tensor in the same units. The samplers call it
as follows:

* DPS (a ``PosteriorDiffusion`` on the VP SDE, ``minus_one_one=True`` by default): the SDE state lives in
  ``[-1, 1]``; the denoiser gets ``(x_t / s_t + 1) / 2`` with ``sigma_t / 2``, i.e. ``[0, 1]`` units, and is
  differentiated through (the DPS guidance is ``grad_x ||A D(x, sigma) - y||``, with ``D`` clipped to ``[-1, 1]``
  in those units). Its output is mapped back to ``[0, 1]`` units.
* DiffPIR: state in ``[-1, 1]`` on the DDPM linear schedule (beta 1e-4 .. 0.02, T = 1000, invdiff's default),
  calls ``model(x_t / (2 sqrt(ab)) + 1/2, sigma_t / 2)`` with ``sigma_t = sqrt((1 - ab) / ab)``: ``[0, 1]`` units.
* DDRM: no range change; ``denoiser(V x_bar, sigma_t)`` with ``sigma_t`` from its ``sigmas`` (default 1 -> 0) in the
  units of the physics. (deepinv's DDRM draws the spectral noise as ``sigma_t * randn / sqrt(2)``, so with an
  orthonormal ``V`` the image it denoises carries noise ``sigma_t / sqrt(2)`` while it announces ``sigma_t``.)

So the image units deepinv sees are the prior's *data units*: ``u = normalisation.inverse(p)`` for a prior working
on ``p = scale * u + offset`` (``NetworkPrior.normalisation``; identity for priors without one). The shipped
``brain-mri`` prior (``u`` in ``[0, 1]``, ``p = 2 u - 1``) matches deepinv's ``[0, 1]`` convention exactly. Physics
and measurements are in the same data units.

Noise level -> VP time: a noisy image ``p0 + s n`` in prior space (``s = |scale| sigma``) is the VP state
``x_t = (p0 + s n) / sqrt(1 + s^2)`` at ``ab_t = 1 / (1 + s^2)``; ``t = schedule.time_of_sigma(s)``. Outside the
schedule's range ``[sigma(0), sigma(T-1)]`` the prior is evaluated at the nearest end; ``sigma = 0`` returns the
input (the MMSE denoiser of a noiseless image is the identity).

Complex data: deepinv tensors are real. Complex images and measurements (MRI k-space, ``complex64``) are exchanged
as real channels, ``invdiff.operators.complex_to_channels``: real parts in channels ``[0, C)``, imaginary parts in
``[C, 2C)``. For single-coil MRI that is deepinv's own MRI layout ``(B, 2, H, W)``. Complex spectral coordinates
(FFT-diagonal operators such as ``Blur``) are exchanged as ``torch.view_as_real`` (a trailing axis of 2). Both maps
are isometries, so adjoints stay exact; ``GaussianNoise(sigma)`` on complex data (``sigma`` per real and imaginary
part) is ``deepinv.physics.GaussianNoise(sigma)`` on the real channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

try:
    import deepinv as dinv
except (ImportError, RuntimeError) as _err:  # RuntimeError: a torchvision built for another torch
    raise ImportError(
        f"invdiff.interop.deepinv needs deepinv, which failed to import ({_err}); install the bench extra, "
        'pip install "invdiff[bench]", with a torchvision that matches your torch (tested: deepinv 0.5.0, '
        "torch 2.14.1, torchvision 0.29.1)"
    ) from _err

from ..operators import ComposedLinearOperator, DecomposableOperator, GaussianNoise, LinearOperator, PoissonNoise
from ..operators.embedding import RealAsComplexChannels
from ..operators.mri import channels_to_complex, complex_to_channels
from ..priors.base import Prior
from ..priors.network import NetworkPrior, Normalisation
from ..schedule import VPSchedule

__all__ = [
    "DeepinvOperator",
    "DeepinvPrior",
    "InvdiffDecomposablePhysics",
    "InvdiffDenoiser",
    "InvdiffPhysics",
    "from_deepinv_denoiser",
    "from_deepinv_physics",
    "run_deepinv_sampler",
    "to_deepinv_denoiser",
    "to_deepinv_physics",
]

InvdiffNoise = GaussianNoise | PoissonNoise


# ---- operators -> physics --------------------------------------------------------------------------------
class _WrapsOperator:
    """``A``, ``A_adjoint`` and ``A_dagger`` of a deepinv physics from an invdiff ``LinearOperator``, with complex
    images and measurements as real channels."""

    operator: LinearOperator

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: N802 - deepinv's name
        return _real(self.operator(_complex_if(x, self.operator.x_is_complex)))

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:  # noqa: N802
        return _real(self.operator.apply_adjoint(_complex_if(y, self.operator.y_is_complex)))

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:  # noqa: N802
        return self.A_adjoint(v)

    def A_dagger(self, y: Tensor, **kwargs: Any) -> Tensor:  # noqa: N802
        return _real(self.operator.pinv(_complex_if(y, self.operator.y_is_complex)))

    def _remember_noise(self, noise: InvdiffNoise | None) -> None:
        # deepinv keeps sigma as a float32 tensor; the round trip gives back the exact invdiff object while the
        # physics still has the noise model it was made with.
        self._invdiff_noise = (noise, self.noise_model)

    def invdiff_noise(self) -> InvdiffNoise | None:
        """The invdiff noise model of this physics (the one it was made with, unless ``noise_model`` was replaced)."""
        noise, model = getattr(self, "_invdiff_noise", (None, None))
        if model is not None and model is self.noise_model:
            return noise if noise is not None else GaussianNoise(0.0)
        return _noise_from_deepinv(self.noise_model)


class InvdiffPhysics(_WrapsOperator, dinv.physics.LinearPhysics):
    """An invdiff ``LinearOperator`` (and noise model) as a ``deepinv.physics.LinearPhysics``.

    Build it with ``to_deepinv_physics``. The operator is a submodule (``physics.operator``), so ``physics.to``
    moves it; ``A_dagger`` is ``operator.pinv`` (closed form where the operator has one).
    """

    def __init__(self, operator: LinearOperator, noise_model: nn.Module) -> None:
        super().__init__(
            noise_model=noise_model,
            img_size=_real_shape(operator.x_shape, operator.x_is_complex),
            device=_device(operator),
        )
        self.operator = operator


class InvdiffDecomposablePhysics(_WrapsOperator, dinv.physics.DecomposablePhysics):
    """An invdiff ``DecomposableOperator`` as a ``deepinv.physics.DecomposablePhysics`` (for DDRM).

    ``A = U diag(mask) V^T`` with ``V_adjoint = op.v_adjoint``, ``U = op.u`` etc.; ``mask`` holds the singular values
    with a leading batch axis of 1 and the shape of the (real view of the) spectral coordinates, in the ``dtype``
    given to ``to_deepinv_physics``. ``A``, ``A_adjoint`` and ``A_dagger`` use the operator's own methods, which are
    cheaper than and equal to the SVD products.
    """

    def __init__(self, operator: DecomposableOperator, noise_model: nn.Module, dtype: torch.dtype) -> None:
        device = _device(operator)
        with torch.no_grad():
            s = operator.singular_values().to(device)
            s = (s.abs() if s.is_complex() else s).to(dtype)
            probe = torch.zeros((1, *operator.x_shape), dtype=_dtype_for(s.dtype, operator.x_is_complex), device=device)
            spectral = operator.v_adjoint(probe)
        s = s.expand(spectral.shape[1:]).unsqueeze(0)
        if spectral.is_complex():  # the same singular value on the real and the imaginary coordinate
            s = s.unsqueeze(-1).expand(*s.shape, 2)
        super().__init__(
            mask=s.contiguous().clone(),
            noise_model=noise_model,
            img_size=_real_shape(operator.x_shape, operator.x_is_complex),
            device=device,
        )
        self.operator = operator
        self._spectral_complex = spectral.is_complex()

    def V_adjoint(self, x: Tensor) -> Tensor:  # noqa: N802
        return _spectral_real(self.operator.v_adjoint(_complex_if(x, self.operator.x_is_complex)))

    def V(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: N802
        return _real(self.operator.v(self._spectral(x)))

    def U_adjoint(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: N802
        return _spectral_real(self.operator.u_adjoint(_complex_if(x, self.operator.y_is_complex)))

    def U(self, x: Tensor) -> Tensor:  # noqa: N802
        return _real(self.operator.u(self._spectral(x)))

    def _spectral(self, z: Tensor) -> Tensor:
        return torch.complex(z[..., 0], z[..., 1]) if self._spectral_complex else z


def to_deepinv_physics(
    op: LinearOperator, noise: InvdiffNoise | None = None, *, dtype: torch.dtype | None = None
) -> InvdiffPhysics:
    """An invdiff linear operator (and noise model) as a deepinv physics, in the operator's units.

    Args:
        op: a ``LinearOperator``; a ``DecomposableOperator`` gives an ``InvdiffDecomposablePhysics`` (DDRM-ready).
            Complex images or measurements appear as real channels (module docstring).
        noise: ``GaussianNoise(sigma)`` -> ``deepinv.physics.GaussianNoise(sigma)``; ``PoissonNoise(gain)`` ->
            ``deepinv.physics.PoissonNoise(1 / gain, normalize=True)`` (the same law); ``None`` -> no noise.
        dtype: real dtype of the singular values (``physics.mask``) that DDRM and ``prox_l2`` use; default torch's
            default dtype (float32, what deepinv's samplers run at). Give ``torch.float64`` for double-precision
            sampling: the operator's own precision does not say it (separable operators keep float64 factors
            whatever they are used at). ``A``, ``A_adjoint`` and ``A_dagger`` follow their input's dtype regardless.

    Returns:
        The physics; ``physics(x)`` simulates a noisy measurement, ``physics.A`` is ``op`` itself.

    Raises:
        TypeError: ``op`` is not a ``LinearOperator``, ``noise`` is another noise model, or ``dtype`` is not a real
            floating dtype.

    Examples:
        >>> from invdiff.operators import GaussianNoise, Inpainting
        >>> physics = to_deepinv_physics(Inpainting(torch.tensor([[1, 0], [0, 1]])), GaussianNoise(0.1))
        >>> physics.A(torch.ones(1, 1, 2, 2)).flatten().tolist(), round(float(physics.noise_model.sigma), 6)
        ([1.0, 0.0, 0.0, 1.0], 0.1)
        >>> from_deepinv_physics(physics)[1]  # the round trip gives back the operator and the exact noise model
        GaussianNoise(sigma=0.1)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"to_deepinv_physics: op must be an invdiff LinearOperator, got {type(op).__name__}")
    noise_model = _noise_to_deepinv(noise)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"to_deepinv_physics: dtype must be a real floating torch.dtype, got {dtype!r}")
    if isinstance(op, DecomposableOperator):
        physics: InvdiffPhysics = InvdiffDecomposablePhysics(op, noise_model, dtype)  # type: ignore[assignment]
    else:
        physics = InvdiffPhysics(op, noise_model)
    physics._remember_noise(noise)
    return physics


# ---- physics -> operators --------------------------------------------------------------------------------
class DeepinvOperator(LinearOperator):
    """A deepinv ``LinearPhysics`` as an invdiff ``LinearOperator`` (noiseless: ``forward`` is ``physics.A``).

    ``adjoint`` is ``physics.A_adjoint`` and ``pinv`` is ``physics.A_dagger``. The physics is a submodule, so
    ``.to(device/dtype)`` moves its buffers. Build it with ``from_deepinv_physics``.

    Args:
        physics: the deepinv physics (linear, tensor-valued measurements).
        x_shape: per-item image shape (no batch axis).
        x_is_complex: whether images are complex tensors (deepinv's own physics take real ones).
        dtype: real dtype of the zero image that probes ``y_shape``; default the widest of the physics' buffers.
    """

    def __init__(
        self,
        physics: dinv.physics.LinearPhysics,
        x_shape: Sequence[int],
        *,
        x_is_complex: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.physics = physics
        self.x_shape = tuple(int(n) for n in x_shape)
        self.x_is_complex = x_is_complex
        dtype = _dtype_for(_real_dtype(physics) if dtype is None else dtype, x_is_complex)
        with torch.no_grad():
            y = physics.A(torch.zeros((1, *self.x_shape), dtype=dtype, device=_device(physics)))
        if not isinstance(y, Tensor):
            raise TypeError(
                f"from_deepinv_physics: physics.A must return a tensor, got {type(y).__name__} "
                "(stacked physics are not supported)"
            )
        self.y_shape = tuple(y.shape[1:])
        self.y_is_complex = y.is_complex()

    def forward(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """``physics.A_dagger(y)`` (deepinv's closed form or least-squares solver; ``tol``/``max_iter`` unused)."""
        self.check_y(y)
        return self.physics.A_dagger(y)

    def extra_repr(self) -> str:
        return f"physics={type(self.physics).__name__}, x_shape={self.x_shape}, y_shape={self.y_shape}"


def from_deepinv_physics(
    physics: dinv.physics.LinearPhysics, example: Tensor | Sequence[int] | None = None
) -> tuple[LinearOperator, InvdiffNoise | None]:
    """A deepinv linear physics as an invdiff operator and noise model.

    A physics made by ``to_deepinv_physics`` gives back its original operator (so the round trip is the identity,
    complex k-space included); any other becomes a ``DeepinvOperator``.

    Args:
        physics: a ``deepinv.physics.LinearPhysics``.
        example: an image batch ``(B, *x_shape)`` or ``x_shape`` itself; defaults to ``physics.img_size`` where the
            physics sets it. ``y_shape`` is read from ``physics.A`` of a zero image.

    Returns:
        ``(operator, noise)``: ``noise`` is ``GaussianNoise(sigma)`` for deepinv's ``GaussianNoise`` (one sigma for
        the batch) and ``ZeroNoise`` (``sigma = 0``), ``PoissonNoise`` for a normalised ``PoissonNoise``, and
        ``None`` for other noise models.

    Raises:
        TypeError: ``physics`` is not a ``LinearPhysics``.
        ValueError: no ``example`` and no ``physics.img_size``; a per-item Gaussian ``sigma``.
    """
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(
            f"from_deepinv_physics: physics must be a deepinv.physics.LinearPhysics, got {type(physics).__name__}"
        )
    if isinstance(physics, (InvdiffPhysics, InvdiffDecomposablePhysics)):
        return physics.operator, physics.invdiff_noise()
    noise = _noise_from_deepinv(physics.noise_model)
    is_complex, dtype = False, None
    if isinstance(example, Tensor):
        if not (example.is_floating_point() or example.is_complex()) or example.ndim < 2:
            raise ValueError(
                f"from_deepinv_physics: example must be a floating image batch (B, *x_shape), got dtype "
                f"{example.dtype} and shape {tuple(example.shape)}"
            )
        shape: Sequence[int] = tuple(example.shape[1:])
        is_complex = example.is_complex()
        dtype = example.real.dtype if is_complex else example.dtype
    elif example is not None:
        shape = tuple(example)
    elif getattr(physics, "img_size", None) is not None:
        shape = tuple(physics.img_size)
    else:
        raise ValueError(
            f"from_deepinv_physics: {type(physics).__name__} does not set img_size; pass example= an image batch "
            "(B, *x_shape) or x_shape"
        )
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(
            f"from_deepinv_physics: x_shape must be positive integers (no batch axis), got {tuple(shape)!r}"
        )
    return DeepinvOperator(physics, shape, x_is_complex=is_complex, dtype=dtype), noise


# ---- priors -> denoisers --------------------------------------------------------------------------------
class InvdiffDenoiser(dinv.models.Denoiser):
    """An invdiff ``Prior`` as a deepinv denoiser ``D(x, sigma) = E[x0 | x0 + sigma n]`` in data units.

    Differentiable in ``x`` (DPS backpropagates through it): a ``NetworkPrior``'s network is run with gradients
    when ``x`` requires them (its own ``denoise`` runs under ``no_grad``). Build it with ``to_deepinv_denoiser``.

    Attributes:
        prior: the wrapped prior.
        normalisation: data units <-> prior space.
    """

    def __init__(self, prior: Prior, normalisation: Normalisation) -> None:
        super().__init__()
        self.prior = prior
        self.normalisation = normalisation
        if isinstance(prior, NetworkPrior):
            self.network = prior.network  # a submodule, so that ``.to`` and ``.eval`` reach it

    def forward(self, x: Tensor, sigma: float | Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``E[x0 | x]`` for ``x = x0 + sigma n`` in data units.

        Args:
            x: ``(B, *prior.x_shape)`` real images in data units.
            sigma: noise standard deviation in data units: a number, a 0-d or ``(B,)`` tensor (or ``(B, 1, ...)``).
            *args, **kwargs: ignored (deepinv passes sampler-specific keywords to every denoiser).

        Returns:
            The denoised batch, shape and dtype of ``x``.
        """
        if not isinstance(x, Tensor) or x.is_complex() or not x.is_floating_point():
            raise TypeError(
                f"InvdiffDenoiser: x must be a real floating tensor, got {getattr(x, 'dtype', type(x).__name__)}"
            )
        sig = _batch_sigma(sigma, x)
        scale, offset = self.normalisation.scale, self.normalisation.offset
        schedule = self.prior.schedule
        t = schedule.time_of_sigma(sig.cpu() * abs(scale)).to(x.device)
        ab = schedule.alpha_bar(t).to(device=x.device, dtype=x.dtype)
        x_t = ab.sqrt().view(-1, *([1] * (x.ndim - 1))) * (x * scale + offset)
        p0 = _denoise(self.prior, x_t, t)
        out = (p0 - offset) / scale
        # A noiseless input is its own MMSE estimate; the schedule stops at sigma(0) > 0.
        return torch.where((sig == 0).view(-1, *([1] * (x.ndim - 1))), x, out)


def to_deepinv_denoiser(prior: Prior, normalisation: Normalisation | None = None) -> InvdiffDenoiser:
    """An invdiff prior as a deepinv denoiser for DPS, DiffPIR, DDRM and deepinv's other plug-and-play methods.

    Args:
        prior: any ``Prior`` (``GaussianPrior``, ``NetworkPrior`` such as ``load_prior("brain-mri", clip=1.0)``).
        normalisation: data units <-> prior space; defaults to ``prior.normalisation`` where the prior has one,
            else the identity (the prior's space is the data space).

    Returns:
        ``D`` with ``D(x, sigma) = normalisation.inverse(prior.denoise(sqrt(ab) normalisation.forward(x), t))``,
        ``ab = 1 / (1 + (scale sigma)^2)``, ``t = schedule.time_of_sigma(scale sigma)`` (module docstring).

    Raises:
        TypeError: ``prior`` does not implement the ``Prior`` protocol, or ``normalisation`` is not a
            ``Normalisation``.

    Examples:
        >>> from invdiff.priors import GaussianPrior
        >>> prior = GaussianPrior.diagonal(torch.zeros(1, 2, 2), 1.0, VPSchedule())
        >>> denoiser = to_deepinv_denoiser(prior)
        >>> torch.allclose(denoiser(torch.ones(1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 0.5))  # 1 / (1 + 1)
        True
    """
    if not isinstance(prior, Prior):
        raise TypeError(
            f"to_deepinv_denoiser: prior must implement the Prior protocol (schedule, x_shape, denoise), "
            f"got {type(prior).__name__}"
        )
    if normalisation is None:
        normalisation = getattr(prior, "normalisation", None) or Normalisation()
    if not isinstance(normalisation, Normalisation):
        raise TypeError(
            f"to_deepinv_denoiser: normalisation must be an invdiff Normalisation, got {type(normalisation).__name__}"
        )
    return InvdiffDenoiser(prior, normalisation)


# ---- denoisers -> priors --------------------------------------------------------------------------------
class DeepinvPrior:
    """A deepinv denoiser as an invdiff ``Prior`` (``schedule``, ``x_shape``, ``denoise``), so invdiff samplers can
    use deepinv's models. Build it with ``from_deepinv_denoiser``.

    ``denoise(x_t, t)`` turns the VP state into a VE image ``x_t / sqrt(ab)`` at noise ``sigma(t)``, maps it to data
    units and calls ``model(u, sigma / |scale|)``; the result goes back to prior space.

    Attributes:
        model: the deepinv denoiser.
        schedule, x_shape: the ``Prior`` protocol.
        normalisation: data units (the model's) <-> prior space.
        nfe: number of ``denoise`` calls so far.
    """

    def __init__(
        self, model: nn.Module, x_shape: tuple[int, ...], schedule: VPSchedule, normalisation: Normalisation
    ) -> None:
        self.model = model
        self.x_shape = x_shape
        self.schedule = schedule
        self.normalisation = normalisation
        self.nfe = 0

    def denoise(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``E[x0 | x_t]`` in prior space for ``x_t`` ``(B, *x_shape)`` and ``t`` ``(B,)`` or a scalar."""
        if not isinstance(x_t, Tensor) or x_t.is_complex() or not x_t.is_floating_point():
            raise TypeError(
                f"DeepinvPrior.denoise: x_t must be a real floating tensor, got {getattr(x_t, 'dtype', type(x_t).__name__)}"
            )
        if x_t.ndim != len(self.x_shape) + 1 or tuple(x_t.shape[1:]) != self.x_shape:
            raise ValueError(
                f"DeepinvPrior.denoise: x_t must have shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x_t.shape)}"
            )
        t = torch.as_tensor(t, dtype=torch.float64).flatten().cpu()
        if t.numel() == 1:
            t = t.expand(x_t.shape[0])
        if t.numel() != x_t.shape[0]:
            raise ValueError(
                f"DeepinvPrior.denoise: t must be a scalar or have shape ({x_t.shape[0]},), got {tuple(t.shape)}"
            )
        ab = self.schedule.alpha_bar(t)
        sigma = self.schedule.sigma(t)
        scale, offset = self.normalisation.scale, self.normalisation.offset
        dtype = _model_dtype(self.model, x_t.dtype)
        p = x_t / ab.sqrt().to(device=x_t.device, dtype=x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        u = ((p - offset) / scale).to(dtype)
        denoised = self.model(u, (sigma / abs(scale)).to(device=x_t.device, dtype=dtype))
        self.nfe += 1
        return denoised.to(x_t.dtype) * scale + offset

    def __repr__(self) -> str:
        return f"DeepinvPrior(model={type(self.model).__name__}, x_shape={self.x_shape}, schedule={self.schedule!r})"


def from_deepinv_denoiser(
    model: nn.Module,
    x_shape: Sequence[int],
    *,
    schedule: VPSchedule | None = None,
    normalisation: Normalisation | None = None,
) -> DeepinvPrior:
    """A deepinv denoiser ``model(x, sigma)`` as an invdiff ``Prior``.

    Args:
        model: a deepinv denoiser (``forward(x, sigma)``, ``sigma`` a ``(B,)`` tensor), e.g. ``DRUNet`` or the
            output of ``to_deepinv_denoiser``.
        x_shape: per-item image shape the prior declares, e.g. ``(1, 64, 64)``.
        schedule: the VP schedule the invdiff samplers run on (default ``VPSchedule()``: linear, T = 1000).
        normalisation: the model's data units <-> prior space (default identity: the sampler works in the model's
            units, ``[0, 1]`` for deepinv's denoisers).

    Raises:
        TypeError: ``model`` is not callable, or ``schedule``/``normalisation`` of the wrong type.
        ValueError: ``x_shape`` is not a sequence of positive ints.
    """
    if not callable(model):
        raise TypeError(
            f"from_deepinv_denoiser: model must be a callable denoiser model(x, sigma), got {type(model).__name__}"
        )
    schedule = VPSchedule() if schedule is None else schedule
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"from_deepinv_denoiser: schedule must be a VPSchedule, got {type(schedule).__name__}")
    normalisation = Normalisation() if normalisation is None else normalisation
    if not isinstance(normalisation, Normalisation):
        raise TypeError(
            f"from_deepinv_denoiser: normalisation must be a Normalisation, got {type(normalisation).__name__}"
        )
    shape = tuple(x_shape) if isinstance(x_shape, Sequence) else ()
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"from_deepinv_denoiser: x_shape must be positive integers (no batch axis), got {x_shape!r}")
    return DeepinvPrior(model, shape, schedule, normalisation)


# ---- deepinv samplers on invdiff priors ---------------------------------------------------------------------
DEEPINV_SAMPLERS = ("DPS", "DiffPIR", "DDRM")


class _ZeroImaginaryDenoiser(nn.Module):
    """The denoiser of ``(real, imaginary)`` channel pairs whose imaginary half is exactly zero under the prior.

    DDRM needs a closed-form SVD; a real image measured as complex k-space (``MRI @ RealAsComplexChannels``) has none,
    but its outer MRI operator on two-channel images does. Running DDRM there with the prior lifted to
    ``p(re, im) = p(re) delta(im)`` is the same problem, and that prior's MMSE denoiser is exact: the wrapped denoiser
    on the real channels and zero on the imaginary ones (they hold only noise).
    """

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: Tensor, sigma: float | Tensor, *args: Any, **kwargs: Any) -> Tensor:
        real = self.denoiser(x[:, : x.shape[1] // 2], sigma, *args, **kwargs)
        return torch.cat([real, torch.zeros_like(real)], dim=1)


def _svd_operator(op: LinearOperator) -> tuple[DecomposableOperator, bool]:
    """The operator DDRM runs on, and whether the image is lifted to ``(real, imaginary)`` channels for it."""
    if isinstance(op, DecomposableOperator):
        return op, False
    if (
        isinstance(op, ComposedLinearOperator)
        and isinstance(op.inner, RealAsComplexChannels)
        and isinstance(op.outer, DecomposableOperator)
    ):
        return op.outer, True
    raise TypeError(
        f"run_deepinv_sampler: DDRM needs a closed-form SVD: a DecomposableOperator (Inpainting, Blur, BoxDownsampling, "
        f"SinglecoilMRI, ...) or one composed with RealAsComplexChannels; got {type(op).__name__}"
    )


def run_deepinv_sampler(
    name: str,
    prior: Prior,
    op: LinearOperator,
    y: Tensor,
    *,
    sigma: float,
    steps: int,
    generator: torch.Generator | None = None,
    options: Mapping[str, Any] | None = None,
) -> Tensor:
    """Run deepinv's DPS, DiffPIR or DDRM with an invdiff prior and operator on a measurement in data units.

    The prior becomes a deepinv denoiser in data units (``to_deepinv_denoiser``), the operator a deepinv physics with
    ``GaussianNoise(sigma)`` (``to_deepinv_physics``; complex k-space as real channels), and deepinv's sampler runs
    with its documented defaults except for the number of iterations:

    * ``"DPS"``: ``deepinv.sampling.DPS(denoiser, num_steps=steps)``: VP SDE, DDPM solver, ``weight=1.0``,
      ``guidance="norm"`` (deepinv's docstring: that weight usually needs to be in the hundreds; ``guidance="annealed"``
      puts it on the likelihood scale, pass ``options={"guidance": "annealed"}``). ``steps - 1`` denoiser calls (the
      last step lands at ``sigma = 0`` and is not denoised again).
    * ``"DiffPIR"``: ``DiffPIR(denoiser, L2(), sigma=sigma, max_iter=steps)``: ``zeta=0.1``, ``lambda_=7.0``
      (the code's defaults; deepinv's docstring says ``zeta`` 1.0). ``steps`` calls.
    * ``"DDRM"``: ``DDRM(denoiser, sigmas=np.linspace(1, 0, steps))``: ``eta=0.85``, ``etab=1.0``. ``steps`` calls.
      Needs a closed-form SVD: a ``DecomposableOperator``, or ``outer @ RealAsComplexChannels`` with a decomposable
      ``outer`` (a real image measured as complex k-space), which runs on ``outer`` with the prior lifted to
      ``(real, imaginary)`` channels with a zero imaginary part (exact; see ``_ZeroImaginaryDenoiser``).

    DiffPIR and DDRM draw from torch's global generator: they run inside ``torch.random.fork_rng`` seeded from
    ``generator``, so the caller's global state is untouched and a seeded ``generator`` makes the run reproducible.

    Args:
        name: ``"DPS"``, ``"DiffPIR"`` or ``"DDRM"``.
        prior: an invdiff ``Prior`` over ``op.x_shape``; a ``NetworkPrior`` counts its network calls in ``prior.nfe``.
        op: the invdiff ``LinearOperator`` in data units.
        y: ``(B, *op.y_shape)`` measurement of a data-unit image (complex for k-space).
        sigma: the noise standard deviation of ``y`` (per real and imaginary part for complex ``y``), > 0.
        steps: number of sampler iterations, an integer >= 2.
        generator: the only source of randomness (one seed is drawn from it); ``None`` draws that seed from torch's
            global generator.
        options: further keyword arguments for the deepinv sampler's constructor (e.g. ``{"weight": 100.0}`` for DPS,
            ``{"zeta": 0.3}`` for DiffPIR, ``{"eta": 1.0}`` for DDRM).

    Returns:
        The estimate in data units, ``(B, *op.x_shape)``, detached, in ``y``'s real dtype (complex when
        ``op.x_is_complex``).

    Raises:
        ValueError: unknown ``name``; ``sigma`` or ``steps`` out of range; ``prior.x_shape`` does not fit ``op``.
        TypeError: ``op`` is not a ``LinearOperator``; DDRM on an operator without a closed-form SVD.
    """
    if name not in DEEPINV_SAMPLERS:
        raise ValueError(f"run_deepinv_sampler: name must be one of {DEEPINV_SAMPLERS}, got {name!r}")
    if not isinstance(op, LinearOperator):
        raise TypeError(f"run_deepinv_sampler: op must be an invdiff LinearOperator, got {type(op).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"run_deepinv_sampler: steps must be an integer >= 2, got {steps!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < float("inf"):
        raise ValueError(f"run_deepinv_sampler: sigma must be a finite number > 0, got {sigma!r}")
    op.check_y(y)
    if tuple(prior.x_shape) != tuple(op.x_shape):
        raise ValueError(
            f"run_deepinv_sampler: prior.x_shape {tuple(prior.x_shape)} does not match op.x_shape {op.x_shape} "
            "(a NetworkPrior takes other image sizes through prior.with_shape(op.x_shape))"
        )
    kwargs = dict(options or {})
    real_dtype = y.real.dtype if y.is_complex() else y.dtype
    device = y.device
    denoiser = to_deepinv_denoiser(prior)
    noise = GaussianNoise(float(sigma))
    y_real = _real(y)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        if name == "DDRM":
            svd_op, lifted = _svd_operator(op)
            physics = to_deepinv_physics(svd_op, noise, dtype=real_dtype)
            model = dinv.sampling.DDRM(
                _ZeroImaginaryDenoiser(denoiser) if lifted else denoiser, sigmas=np.linspace(1, 0, steps), **kwargs
            )
            x = model(y_real, physics)
            if lifted:
                x = x[:, : x.shape[1] // 2]
        else:
            physics = to_deepinv_physics(op, noise, dtype=real_dtype)
            if name == "DPS":
                rng = torch.Generator(device).manual_seed(seed)
                model = dinv.sampling.DPS(denoiser, num_steps=steps, device=device, rng=rng, **kwargs)
            else:
                model = dinv.sampling.DiffPIR(
                    denoiser, dinv.optim.data_fidelity.L2(), sigma=float(sigma), max_iter=steps, device=device, **kwargs
                )
            x = model(y_real, physics)
    x = x.detach().to(real_dtype)
    return channels_to_complex(x) if op.x_is_complex else x


# ---- helpers ------------------------------------------------------------------------------------------------
def _denoise(prior: Prior, x_t: Tensor, t: Tensor) -> Tensor:
    """``prior.denoise``, differentiable in ``x_t`` when a gradient is asked for."""
    if isinstance(prior, NetworkPrior) and torch.is_grad_enabled() and x_t.requires_grad:
        return _network_denoise_with_grad(prior, x_t, t)
    return prior.denoise(x_t, t).to(x_t.dtype)


def _network_denoise_with_grad(prior: NetworkPrior, x_t: Tensor, t: Tensor) -> Tensor:
    """``NetworkPrior.denoise`` with the graph kept: the prior runs its network under ``no_grad`` (invdiff's
    samplers never backpropagate through it), DPS must. Same conversions, through the prior's schedule."""
    dev, dt = prior.device, prior.dtype
    out = prior.network(x_t.to(device=dev, dtype=dt), timesteps=t.to(device=dev, dtype=dt)).to(
        device=x_t.device, dtype=x_t.dtype
    )
    prior.nfe += 1
    schedule = prior.schedule
    if prior.prediction == "epsilon":
        x0 = schedule.x0_from_eps(x_t, out, t)
    elif prior.prediction == "v":
        x0 = schedule.x0_from_eps(x_t, schedule.eps_from_v(x_t, out, t), t)
    else:
        x0 = out
    return x0.clamp(-prior.clip, prior.clip) if prior.clip is not None else x0


def _batch_sigma(sigma: float | Tensor, x: Tensor) -> Tensor:
    """``sigma`` as a float64 ``(B,)`` tensor on ``x``'s device."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise TypeError(f"InvdiffDenoiser: sigma must be a number or a tensor, got {type(sigma).__name__}")
    sig = torch.as_tensor(sigma).detach().to(device=x.device, dtype=torch.float64).flatten()
    batch = x.shape[0]
    if sig.numel() == 1:
        sig = sig.expand(batch)
    if sig.numel() != batch:
        raise ValueError(
            f"InvdiffDenoiser: sigma must be a scalar or hold one value per item ({batch}), got shape {tuple(torch.as_tensor(sigma).shape)}"
        )
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
        raise ValueError(f"InvdiffDenoiser: sigma must be finite and >= 0, got {sig.tolist()}")
    return sig


def _noise_to_deepinv(noise: object) -> nn.Module:
    if noise is None:
        return dinv.physics.ZeroNoise()
    if isinstance(noise, GaussianNoise):
        return dinv.physics.GaussianNoise(sigma=float(noise.sigma))
    if isinstance(noise, PoissonNoise):
        # invdiff: Poisson(gain * z) / gain; deepinv (normalize=True): gamma * Poisson(z / gamma).
        return dinv.physics.PoissonNoise(gain=1.0 / noise.gain, normalize=True)
    raise TypeError(
        f"to_deepinv_physics: noise must be GaussianNoise, PoissonNoise or None, got {type(noise).__name__}"
    )


def _noise_from_deepinv(noise_model: object) -> InvdiffNoise | None:
    if isinstance(noise_model, dinv.physics.ZeroNoise):
        return GaussianNoise(0.0)
    if isinstance(noise_model, dinv.physics.GaussianNoise):
        sigma = torch.as_tensor(noise_model.sigma).detach().flatten()
        if sigma.numel() != 1 and not bool((sigma == sigma[0]).all()):
            raise ValueError(
                f"from_deepinv_physics: per-item noise levels {sigma.tolist()} have no invdiff equivalent; "
                "use one sigma for the batch"
            )
        return GaussianNoise(float(sigma[0]))
    if isinstance(noise_model, dinv.physics.PoissonNoise) and bool(noise_model.normalize):
        gain = torch.as_tensor(noise_model.gain).detach().flatten()
        if gain.numel() == 1:
            return PoissonNoise(1.0 / float(gain[0]))
    return None


def _real(t: Tensor) -> Tensor:
    return complex_to_channels(t) if t.is_complex() else t


def _complex_if(t: Tensor, is_complex: bool) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    return channels_to_complex(t) if is_complex and not t.is_complex() else t


def _spectral_real(z: Tensor) -> Tensor:
    return torch.view_as_real(z) if z.is_complex() else z


def _real_shape(shape: tuple[int, ...], is_complex: bool) -> tuple[int, ...]:
    return (2 * shape[0], *shape[1:]) if is_complex else tuple(shape)


def _dtype_for(real: torch.dtype, is_complex: bool) -> torch.dtype:
    if not is_complex:
        return real
    return torch.complex128 if real == torch.float64 else torch.complex64


def _device(module: nn.Module) -> torch.device:
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _real_dtype(module: nn.Module) -> torch.dtype:
    """The widest real dtype among a module's floating and complex buffers (float32 when it has none): a deepinv
    physics built from float64 tensors also holds float32 bookkeeping buffers."""
    dtypes = [
        t.real.dtype if t.is_complex() else t.dtype for t in module.buffers() if t.is_floating_point() or t.is_complex()
    ]
    return max(dtypes, key=lambda d: torch.finfo(d).bits, default=torch.float32)


def _model_dtype(model: object, default: torch.dtype) -> torch.dtype:
    params = model.parameters() if isinstance(model, nn.Module) else iter(())
    for p in params:
        if p.is_floating_point():
            return p.dtype
    return default
