"""The analytic Gaussian prior ``x0 ~ N(mu, C)``: an exact denoiser, the oracle for every sampler test.

Under the VP forward process ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` the pair ``(x0, x_t)`` is jointly
Gaussian, so the denoiser is the Gaussian conditional mean (Tweedie's formula in closed form):

    E[x0 | x_t] = mu + sqrt(ab) C (ab C + (1 - ab) I)^{-1} (x_t - sqrt(ab) mu)

and the marginal is ``p_t = N(sqrt(ab) mu, ab C + (1 - ab) I)``. Three representations of ``C`` make
this cheap: a dense matrix (eigendecomposed once, ``C = Q diag(lam) Q^T``), a diagonal (elementwise) and
low rank plus diagonal ``C = F F^T + diag(d)`` (Woodbury identity with an ``r x r`` solve per item).
Internal maths is float64; outputs follow the dtype of the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import VPSchedule

__all__ = ["GaussianPrior"]


class GaussianPrior:
    """Gaussian prior ``N(mean, C)`` over real tensors of shape ``x_shape`` with an exact denoiser.

    Build it with ``GaussianPrior.full``, ``GaussianPrior.diagonal`` or ``GaussianPrior.low_rank``.
    Satisfies the ``Prior`` protocol (``schedule``, ``x_shape``, ``denoise``).

    Attributes:
        schedule: the VP schedule the denoiser is defined on.
        x_shape: per-item shape, e.g. ``(1, 8, 8)``; ``n = prod(x_shape)``.
        mean: ``x_shape`` tensor in the dtype it was given (float32 or float64).
        dtype: default dtype of ``sample`` (that of ``mean``).
        kind: ``"full"``, ``"diagonal"`` or ``"low_rank"``.
        n: number of scalar entries of one item.

    Examples:
        >>> from invdiff.schedule import VPSchedule
        >>> prior = GaussianPrior.diagonal(torch.zeros(1, 2, 2), 0.5, VPSchedule())
        >>> prior.denoise(torch.ones(3, 1, 2, 2), torch.tensor([0.0, 10.0, 999.0])).shape
        torch.Size([3, 1, 2, 2])
    """

    def __init__(self, mean: Tensor, covariance: _Covariance, schedule: VPSchedule) -> None:
        """Internal: use the ``full`` / ``diagonal`` / ``low_rank`` constructors, which validate input."""
        self.schedule = schedule
        self.x_shape: tuple[int, ...] = tuple(mean.shape)
        self.mean = mean
        self.dtype = mean.dtype
        self.n = math.prod(self.x_shape)
        self._cov = covariance
        self._mu = mean.detach().to(torch.float64).reshape(-1)

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def full(cls, mean: Tensor, cov: Tensor, schedule: VPSchedule) -> GaussianPrior:
        """Dense covariance ``cov`` of shape ``(n, n)``, symmetric positive semi-definite.

        Symmetry and PSD are checked to a relative tolerance ``sqrt(eps)`` of ``cov``'s dtype
        (about 3.5e-4 for float32, 1.5e-8 for float64); within it, ``cov`` is symmetrised and
        tiny negative eigenvalues are set to zero.

        Raises:
            TypeError: ``mean``/``cov`` not real floating tensors, or ``schedule`` not a ``VPSchedule``.
            ValueError: shape mismatch, NaN/inf entries, ``cov`` not symmetric or not PSD.
        """
        mean = _check_mean(mean, "GaussianPrior.full")
        _check_schedule(schedule, "GaussianPrior.full")
        n = mean.numel()
        cov = _check_tensor(cov, "cov", "GaussianPrior.full")
        if tuple(cov.shape) != (n, n):
            raise ValueError(
                f"GaussianPrior.full: cov must have shape (n, n) = ({n}, {n}) for mean of shape "
                f"{tuple(mean.shape)}, got {tuple(cov.shape)}"
            )
        return cls(mean, _FullCovariance.from_matrix(cov.to(mean.device)), schedule)

    @classmethod
    def diagonal(cls, mean: Tensor, var: Tensor | float, schedule: VPSchedule) -> GaussianPrior:
        """Independent entries with variances ``var`` (a tensor broadcastable to ``x_shape``, or a float).

        Raises:
            TypeError: non-tensor / non-real input, or ``schedule`` not a ``VPSchedule``.
            ValueError: ``var`` not broadcastable to ``x_shape``, negative, NaN or inf.
        """
        mean = _check_mean(mean, "GaussianPrior.diagonal")
        _check_schedule(schedule, "GaussianPrior.diagonal")
        var_t = _check_tensor(torch.as_tensor(var, dtype=torch.float64) if not isinstance(var, Tensor) else var,
                              "var", "GaussianPrior.diagonal")
        try:
            var_t = torch.broadcast_to(var_t.to(mean.device, torch.float64), mean.shape)
        except RuntimeError:
            raise ValueError(
                f"GaussianPrior.diagonal: var must be broadcastable to x_shape {tuple(mean.shape)}, "
                f"got shape {tuple(var_t.shape)}"
            ) from None
        if bool((var_t < 0).any()):
            raise ValueError(f"GaussianPrior.diagonal: var must be >= 0, got minimum {float(var_t.min())}")
        return cls(mean, _DiagonalCovariance(var_t.reshape(-1).clone()), schedule)

    @classmethod
    def low_rank(cls, mean: Tensor, factor: Tensor, diag: Tensor | float, schedule: VPSchedule) -> GaussianPrior:
        """Covariance ``F F^T + diag(d)`` with ``factor`` F of shape ``(n, r)`` and ``diag`` d >= 0.

        ``diag`` may be a float, an ``(n,)`` tensor or a tensor broadcastable to ``x_shape``.

        Raises:
            TypeError: non-tensor / non-real input, or ``schedule`` not a ``VPSchedule``.
            ValueError: ``factor`` not ``(n, r)``, ``diag`` of the wrong shape or negative, NaN or inf.
        """
        who = "GaussianPrior.low_rank"
        mean = _check_mean(mean, who)
        _check_schedule(schedule, who)
        n = mean.numel()
        factor = _check_tensor(factor, "factor", who)
        if factor.ndim != 2 or factor.shape[0] != n:
            raise ValueError(f"{who}: factor must have shape (n, r) with n = {n}, got {tuple(factor.shape)}")
        d = _check_tensor(torch.as_tensor(diag, dtype=torch.float64) if not isinstance(diag, Tensor) else diag,
                          "diag", who).to(mean.device, torch.float64)
        if tuple(d.shape) == (n,):
            d_flat = d
        else:
            try:
                d_flat = torch.broadcast_to(d, mean.shape).reshape(-1)
            except RuntimeError:
                raise ValueError(
                    f"{who}: diag must be a float, an (n,) = ({n},) tensor or broadcastable to x_shape "
                    f"{tuple(mean.shape)}, got shape {tuple(d.shape)}"
                ) from None
        if bool((d_flat < 0).any()):
            raise ValueError(f"{who}: diag must be >= 0, got minimum {float(d_flat.min())}")
        return cls(mean, _LowRankCovariance(factor.to(mean.device, torch.float64).clone(), d_flat.clone()), schedule)

    # ---- properties --------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self._cov.kind

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device: torch.device | str) -> GaussianPrior:
        """A copy of the prior with all its tensors on ``device`` (the prior itself is unchanged)."""
        return GaussianPrior(self.mean.to(device), self._cov.to(torch.device(device)), self.schedule)

    def __repr__(self) -> str:
        return f"GaussianPrior(kind={self.kind!r}, x_shape={self.x_shape}, schedule={self.schedule!r})"

    # ---- the Prior protocol -----------------------------------------------------------------
    def denoise(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """Exact ``E[x0 | x_t]`` (differentiable in ``x_t``).

        Args:
            x_t: ``(B, *x_shape)`` real float tensor on the prior's device.
            t: times of shape ``(B,)`` (or a scalar, used for every item) in ``[0, T-1]``.

        Returns:
            ``(B, *x_shape)`` in ``x_t``'s dtype.

        Raises:
            TypeError: ``x_t`` not a real floating tensor.
            ValueError: wrong shape or device, non-finite ``x_t`` or ``t``, ``t`` out of range.
        """
        flat = self._check_x(x_t, "x_t", "denoise")
        ab = self._alpha_bar(t, x_t.shape[0])
        sab = ab.sqrt()[:, None]
        r = flat - sab * self._mu
        out = self._mu + sab * self._cov.gain(r, ab)
        return out.reshape(x_t.shape).to(x_t.dtype)

    # ---- sampling and moments -----------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
        """``n`` independent draws ``x0 = mean + L z`` with ``L L^T = C``, shape ``(n, *x_shape)``.

        Args:
            n: number of draws, an integer >= 1.
            generator: the only source of randomness (on the prior's device).
            dtype: output dtype; defaults to the dtype of ``mean``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"GaussianPrior.sample: n must be an integer >= 1, got {n!r}")
        z = torch.randn((n, self._cov.noise_dim), generator=generator, dtype=torch.float64, device=self.device)
        x = self._mu + self._cov.sqrt_apply(z)
        return x.reshape(n, *self.x_shape).to(dtype or self.dtype)

    def covariance_matrix(self) -> Tensor:
        """The dense covariance ``C``, ``(n, n)`` float64."""
        return self._cov.dense()

    def marginal_variance(self) -> Tensor:
        """``diag(C)`` reshaped to ``x_shape``, float64."""
        return self._cov.variance().reshape(self.x_shape)

    def sqrt_factor(self) -> Tensor:
        """A dense ``L`` of shape ``(n, k)`` with ``L L^T = C`` (float64); used by the closed-form posterior."""
        return self._cov.sqrt_dense()

    def log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; mean, C)`` per item, shape ``(B,)`` in ``x``'s dtype. Needs ``C`` positive definite.

        Raises:
            ValueError: ``C`` is singular (the density does not exist), or ``x`` has a wrong shape.
        """
        flat = self._check_x(x, "x", "log_prob")
        quad, logdet = self._cov.quad_logdet(flat - self._mu)
        return (-0.5 * (quad + logdet + self.n * math.log(2 * math.pi))).to(x.dtype)

    # ---- validation ------------------------------------------------------------------------------
    def _check_x(self, x: Tensor, name: str, method: str) -> Tensor:
        who = f"GaussianPrior.{method}"
        if not isinstance(x, Tensor):
            raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex() or not x.is_floating_point():
            raise TypeError(f"{who}: {name} must be a real floating tensor, got dtype {x.dtype}")
        if x.ndim != len(self.x_shape) + 1 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"{who}: {name} must have shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"{who}: {name} is on {x.device} but the prior is on {self.device}; use prior.to(device)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{who}: {name} contains NaN or inf")
        return x.to(torch.float64).reshape(x.shape[0], -1)

    def _alpha_bar(self, t: Tensor | float, batch: int) -> Tensor:
        t = torch.as_tensor(t)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"GaussianPrior.denoise: t must be a real tensor of times, got dtype {t.dtype}")
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"GaussianPrior.denoise: t must have shape ({batch},) or be a scalar, got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"GaussianPrior.denoise: t contains NaN or inf: {t.tolist()}")
        return self.schedule.alpha_bar(t).to(self.device, torch.float64)


# ---- covariance representations (float64 internals) -----------------------------------------------
class _Covariance:
    """``C`` in one representation. ``gain(r, ab)`` = ``C (ab C + (1 - ab) I)^{-1} r`` for ``r`` (B, n)."""

    kind: str
    noise_dim: int

    def gain(self, r: Tensor, ab: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sqrt_apply(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sqrt_dense(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dense(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def variance(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def quad_logdet(self, r: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device: torch.device) -> _Covariance:  # pragma: no cover - abstract
        raise NotImplementedError


class _FullCovariance(_Covariance):
    kind = "full"

    def __init__(self, cov: Tensor, lam: Tensor, q: Tensor) -> None:
        self.cov, self.lam, self.q = cov, lam, q
        self.noise_dim = cov.shape[0]

    @classmethod
    def from_matrix(cls, cov: Tensor) -> _FullCovariance:
        tol = math.sqrt(torch.finfo(cov.dtype).eps)
        c = cov.to(torch.float64)
        scale = float(c.abs().max()) if c.numel() else 0.0
        asym = float((c - c.T).abs().max()) if c.numel() else 0.0
        if asym > tol * scale:
            raise ValueError(
                f"GaussianPrior.full: cov must be symmetric; max |cov - cov^T| = {asym:.3g} exceeds "
                f"{tol:.1e} x max |cov| = {tol * scale:.3g}"
            )
        c = 0.5 * (c + c.T)
        lam, q = torch.linalg.eigh(c)
        top = float(lam.abs().max()) if lam.numel() else 0.0
        if lam.numel() and float(lam.min()) < -tol * top:
            raise ValueError(
                f"GaussianPrior.full: cov must be positive semi-definite; smallest eigenvalue {float(lam.min()):.3g} "
                f"(largest {top:.3g})"
            )
        return cls(c, lam.clamp_min(0), q)

    def gain(self, r: Tensor, ab: Tensor) -> Tensor:
        ab = ab[:, None]
        w = self.lam / (ab * self.lam + (1 - ab))  # (B, n); the denominator is >= 1 - ab > 0
        return ((r @ self.q) * w) @ self.q.T

    def sqrt_apply(self, z: Tensor) -> Tensor:
        return (z * self.lam.sqrt()) @ self.q.T

    def sqrt_dense(self) -> Tensor:
        return self.q * self.lam.sqrt()

    def dense(self) -> Tensor:
        return self.cov.clone()

    def variance(self) -> Tensor:
        return self.cov.diagonal().clone()

    def quad_logdet(self, r: Tensor) -> tuple[Tensor, Tensor]:
        floor = self.lam.max() * self.lam.shape[0] * torch.finfo(torch.float64).eps
        if bool((self.lam <= floor).any()):
            raise ValueError("GaussianPrior.log_prob: the covariance is singular, so the prior has no density")
        return ((r @ self.q) ** 2 / self.lam).sum(1), self.lam.log().sum()

    def to(self, device: torch.device) -> _FullCovariance:
        return _FullCovariance(self.cov.to(device), self.lam.to(device), self.q.to(device))


class _DiagonalCovariance(_Covariance):
    kind = "diagonal"

    def __init__(self, var: Tensor) -> None:
        self.var = var
        self.noise_dim = var.shape[0]

    def gain(self, r: Tensor, ab: Tensor) -> Tensor:
        ab = ab[:, None]
        return r * self.var / (ab * self.var + (1 - ab))

    def sqrt_apply(self, z: Tensor) -> Tensor:
        return z * self.var.sqrt()

    def sqrt_dense(self) -> Tensor:
        return torch.diag(self.var.sqrt())

    def dense(self) -> Tensor:
        return torch.diag(self.var)

    def variance(self) -> Tensor:
        return self.var.clone()

    def quad_logdet(self, r: Tensor) -> tuple[Tensor, Tensor]:
        if bool((self.var <= 0).any()):
            raise ValueError("GaussianPrior.log_prob: some variances are zero, so the prior has no density")
        return (r**2 / self.var).sum(1), self.var.log().sum()

    def to(self, device: torch.device) -> _DiagonalCovariance:
        return _DiagonalCovariance(self.var.to(device))


class _LowRankCovariance(_Covariance):
    kind = "low_rank"

    def __init__(self, factor: Tensor, d: Tensor) -> None:
        self.f, self.d = factor, d
        self.noise_dim = factor.shape[1] + d.shape[0]

    def gain(self, r: Tensor, ab: Tensor) -> Tensor:
        # M = D' + ab F F^T with D' = ab d + (1 - ab) > 0. Woodbury, written with ab multiplying (not
        # dividing) the r x r system so that it stays well conditioned as ab -> 0:
        #   M^{-1} r = D'^{-1} r - D'^{-1} F (I + ab F^T D'^{-1} F)^{-1} ab F^T D'^{-1} r
        ab1 = ab[:, None]
        dp = ab1 * self.d + (1 - ab1)  # (B, n)
        rd = r / dp
        rank = self.f.shape[1]
        if rank:
            fd = self.f[None] / dp[:, :, None]  # (B, n, r) = D'^{-1} F
            k = torch.eye(rank, dtype=r.dtype, device=r.device) + ab[:, None, None] * (self.f.T[None] @ fd)
            rhs = ab1 * (rd @ self.f)  # (B, r) = ab F^T D'^{-1} r
            sol = torch.linalg.solve(k, rhs)  # K is SPD (I + PSD)
            u = rd - (fd @ sol[:, :, None])[..., 0]
        else:
            u = rd
        return (u @ self.f) @ self.f.T + self.d * u

    def sqrt_apply(self, z: Tensor) -> Tensor:
        rank = self.f.shape[1]
        return z[:, :rank] @ self.f.T + z[:, rank:] * self.d.sqrt()

    def sqrt_dense(self) -> Tensor:
        return torch.cat([self.f, torch.diag(self.d.sqrt())], dim=1)

    def dense(self) -> Tensor:
        return self.f @ self.f.T + torch.diag(self.d)

    def variance(self) -> Tensor:
        return (self.f**2).sum(1) + self.d

    def quad_logdet(self, r: Tensor) -> tuple[Tensor, Tensor]:
        if bool((self.d <= 0).any()):
            raise ValueError("GaussianPrior.log_prob: needs diag > 0 everywhere (Woodbury and the density)")
        rank = self.f.shape[1]
        rd = r / self.d
        fd = self.f / self.d[:, None]
        k = torch.eye(rank, dtype=r.dtype, device=r.device) + self.f.T @ fd  # I + F^T D^{-1} F
        chol = torch.linalg.cholesky(k)
        proj = torch.cholesky_solve((rd @ self.f).T, chol).T  # K^{-1} F^T D^{-1} r, (B, r)
        quad = (r * rd).sum(1) - ((rd @ self.f) * proj).sum(1)
        # Matrix determinant lemma: det(D + F F^T) = det(D) det(I + F^T D^{-1} F).
        logdet = self.d.log().sum() + 2 * chol.diagonal().log().sum()
        return quad, logdet

    def to(self, device: torch.device) -> _LowRankCovariance:
        return _LowRankCovariance(self.f.to(device), self.d.to(device))


# ---- argument checks ----------------------------------------------------------------------------
def _check_tensor(value: object, name: str, who: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() or not value.is_floating_point():
        raise TypeError(f"{who}: {name} must be a real floating tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{who}: {name} contains NaN or inf")
    return value.detach()


def _check_mean(mean: object, who: str) -> Tensor:
    mean = _check_tensor(mean, "mean", who)
    if mean.ndim < 1 or mean.numel() == 0:
        raise ValueError(f"{who}: mean must have the per-item shape x_shape (ndim >= 1, non-empty), got {tuple(mean.shape)}")
    return mean.clone()


def _check_schedule(schedule: object, who: str) -> None:
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"{who}: schedule must be an invdiff.schedule.VPSchedule, got {type(schedule).__name__}")
