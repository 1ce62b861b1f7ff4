"""Closed-form posterior of a Gaussian prior under a linear operator with Gaussian noise (test oracle).

For ``x ~ N(mu, C)`` and ``y = A x + sigma n`` the posterior is Gaussian. With a square root
``C = L L^T`` write ``x = mu + L z``, ``z ~ N(0, I)``, and ``B = A L = U diag(s) V^T`` (SVD). Then

    z | y ~ N( V diag(s / (s^2 + sigma^2)) U^T (y - A mu),  V diag(sigma^2 / (s^2 + sigma^2)) V^T )

(directions of ``V`` beyond ``s`` get variance 1), and ``x | y = mu + L (z | y)``. The covariance is
assembled as ``(L V) diag(c) (L V)^T``, positive semi-definite by construction, with no subtraction.
``sigma = 0`` (noiseless conditioning) is the limit: ``B^+`` with singular values below
``max(m, k) * eps * s_max`` dropped, as ``numpy.linalg.pinv`` does; for inconsistent ``y`` this gives
the least-squares conditional.

``A`` is built densely by applying the operator to the standard basis, so this is for small problems
(``n <= MAX_POSTERIOR_DIM``). A complex measurement of a real ``x`` counts as its real and imaginary
parts, each with variance ``sigma^2`` (the ``GaussianNoise`` convention). All maths is float64.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor

from .operators import GaussianNoise, LinearOperator, Operator
from .priors.gaussian import GaussianPrior

__all__ = ["MAX_POSTERIOR_DIM", "gaussian_posterior", "operator_matrix", "posterior_marginal_std"]

MAX_POSTERIOR_DIM = 2048
"""Largest ``n = prod(x_shape)`` accepted: the dense ``(n, n)`` algebra costs O(n^3) time and O(n^2) memory."""

_BASIS_CHUNK = 256


def operator_matrix(op: LinearOperator, *, device: torch.device | str | None = None) -> Tensor:
    """The dense real matrix of a linear operator on real inputs, float64.

    Row ``i`` is entry ``i`` of the flattened measurement; a complex measurement contributes its real
    parts followed by its imaginary parts, so the result is ``(m, n)`` for real and ``(2 m, n)`` for
    complex measurements with ``m = prod(y_shape)`` and ``n = prod(x_shape)``.

    Args:
        op: a ``LinearOperator`` with real inputs (``x_is_complex`` False); it is not modified (a float64
            copy is used).
        device: where to compute; defaults to the operator's buffers' device.

    Raises:
        TypeError: ``op`` is not a linear operator, or takes complex inputs.
        ValueError: ``n`` exceeds ``MAX_POSTERIOR_DIM``.
    """
    op = _check_op(op, "operator_matrix")
    n = _numel(op.x_shape)
    if n > MAX_POSTERIOR_DIM:
        raise ValueError(
            f"operator_matrix: prod(x_shape) = {n} exceeds MAX_POSTERIOR_DIM = {MAX_POSTERIOR_DIM}; "
            "the dense closed form is meant for small test problems"
        )
    if device is None:
        device = next((b.device for b in op.buffers()), torch.device("cpu"))
    # A float64 copy: buffers promote to float64/complex128 without touching the caller's operator.
    op64 = copy.deepcopy(op).to(device=device, dtype=torch.float64)
    cols = []
    with torch.no_grad():
        for start in range(0, n, _BASIS_CHUNK):
            idx = torch.arange(start, min(start + _BASIS_CHUNK, n), device=device)
            basis = torch.zeros((idx.numel(), n), dtype=torch.float64, device=device)
            basis[torch.arange(idx.numel(), device=device), idx] = 1.0
            cols.append(_real_rows(op64(basis.reshape(-1, *op.x_shape))))
    return torch.cat(cols, dim=0).T.contiguous()


def gaussian_posterior(prior: GaussianPrior, op: LinearOperator, y: Tensor, noise: GaussianNoise) -> tuple[Tensor, Tensor]:
    """Exact posterior ``p(x | y)`` for a Gaussian prior, a linear operator and Gaussian noise.

    Args:
        prior: a ``GaussianPrior`` (any representation) with ``x_shape == op.x_shape``.
        op: a ``LinearOperator`` on real inputs.
        y: measurements ``(B, *op.y_shape)`` (complex where the operator's output is).
        noise: ``GaussianNoise(sigma)``; ``sigma = 0`` gives noiseless conditioning.

    Returns:
        ``(mean, cov)``: ``mean`` ``(B, *x_shape)`` and ``cov`` ``(n, n)`` (the same for every item),
        both float64 on ``y``'s device.

    Raises:
        TypeError: wrong argument types (non-Gaussian prior or noise, non-linear operator, complex ``x``).
        ValueError: shape mismatches, non-finite ``y``, or ``n > MAX_POSTERIOR_DIM``.

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> prior = GaussianPrior.diagonal(torch.zeros(1, 2), 1.0, VPSchedule())
        >>> class Identity(LinearOperator):
        ...     x_shape = y_shape = (1, 2)
        ...     def forward(self, x): return x
        ...     def adjoint(self, y): return y
        >>> mean, cov = gaussian_posterior(prior, Identity(), torch.ones(1, 1, 2), GaussianNoise(1.0))
        >>> mean.flatten().tolist(), cov.diagonal().tolist()
        ([0.5, 0.5], [0.5, 0.5])
    """
    mean, cov = _posterior(prior, op, y, noise, "gaussian_posterior")
    return cast(Tensor, mean), cov


def posterior_marginal_std(prior: GaussianPrior, op: LinearOperator, noise: GaussianNoise) -> Tensor:
    """Posterior standard deviation per entry, ``x_shape`` float64 (it does not depend on ``y``)."""
    _, cov = _posterior(prior, op, None, noise, "posterior_marginal_std")
    return cov.diagonal().clamp_min(0).sqrt().reshape(prior.x_shape)


def _posterior(
    prior: GaussianPrior, op: LinearOperator, y: Tensor | None, noise: GaussianNoise, who: str
) -> tuple[Tensor | None, Tensor]:
    if not isinstance(prior, GaussianPrior):
        raise TypeError(f"{who}: prior must be a GaussianPrior (the closed form needs a Gaussian), got {type(prior).__name__}")
    op = _check_op(op, who)
    if not isinstance(noise, GaussianNoise):
        raise TypeError(f"{who}: noise must be GaussianNoise, got {type(noise).__name__}")
    if tuple(op.x_shape) != prior.x_shape:
        raise ValueError(f"{who}: operator x_shape {tuple(op.x_shape)} does not match the prior's x_shape {prior.x_shape}")
    if prior.n > MAX_POSTERIOR_DIM:
        raise ValueError(
            f"{who}: prod(x_shape) = {prior.n} exceeds MAX_POSTERIOR_DIM = {MAX_POSTERIOR_DIM}; "
            "the dense closed form is meant for small test problems"
        )
    if y is not None:
        op.check_y(y)
        if not bool(torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all()):
            raise ValueError(f"{who}: y contains NaN or inf")

    dev = prior.device
    a = operator_matrix(op, device=dev)  # (m, n)
    ell = prior.sqrt_factor()  # (n, k)
    mu = prior.mean.to(torch.float64).reshape(-1)
    b = a @ ell  # (m, k)
    m, k = b.shape
    sigma2 = float(noise.sigma) ** 2
    # full_matrices only when m < k, so that Vh is always a complete k x k basis without a large U.
    u, s, vh = torch.linalg.svd(b, full_matrices=m < k)
    p = s.shape[0]
    cutoff = max(m, k) * torch.finfo(torch.float64).eps * (float(s.max()) if p else 0.0)
    keep = s > cutoff
    s_kept = torch.where(keep, s, torch.zeros_like(s))
    denom = torch.where(keep, s_kept**2 + sigma2, torch.ones_like(s))
    # Posterior variance of each spectral coordinate of z: sigma^2 / (s^2 + sigma^2), 1 where s is dropped.
    c = torch.ones(k, dtype=torch.float64, device=dev)
    c[:p] = torch.where(keep, sigma2 / denom, torch.ones_like(s))
    lv = ell @ vh.T  # (n, k)
    cov = (lv * c) @ lv.T
    cov = 0.5 * (cov + cov.T)

    if y is None:
        return None, cov
    r = _real_rows(y.to(dev)) - mu @ a.T  # (B, m)
    gain = torch.where(keep, s_kept / denom, torch.zeros_like(s))  # (p,)
    z_mean = ((r @ u[:, :p]) * gain) @ vh[:p]  # (B, k)
    mean = mu + z_mean @ ell.T
    return mean.reshape(y.shape[0], *prior.x_shape).to(y.device), cov.to(y.device)


def _check_op(op: object, who: str) -> LinearOperator:
    if not isinstance(op, Operator) or not isinstance(op, LinearOperator):
        raise TypeError(f"{who}: op must be a LinearOperator (with an exact adjoint), got {type(op).__name__}")
    if op.x_is_complex:
        raise TypeError(
            f"{who}: op takes complex inputs ({type(op).__name__}.x_is_complex is True); Gaussian priors are over real "
            "tensors, use the two-channel (real, imaginary) layout"
        )
    return op


def _real_rows(y: Tensor) -> Tensor:
    """Flatten a batch of measurements to real rows: ``(B, m)``, or ``(B, 2 m)`` as [real parts, imaginary parts]."""
    flat = y.reshape(y.shape[0], -1)
    if flat.is_complex():
        return torch.cat([flat.real, flat.imag], dim=1).to(torch.float64)
    return flat.to(torch.float64)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
