"""Operator capability tiers: ``Operator`` -> ``LinearOperator`` -> ``DecomposableOperator``.

Every operator is a noiseless, batched map ``(B, *x_shape) -> (B, *y_shape)``. Its defining
tensors are buffers, so ``.to(device)`` and ``state_dict()`` work, and no method mutates it.
Complex-valued buffers are stored as real ``(..., 2)`` views (``register_complex_buffer``) so
that ``.to(torch.float64)`` promotes them to ``complex128`` instead of discarding the imaginary
part, which is what ``nn.Module.to`` does to a complex tensor asked to become real.

A sampler checks the tier it needs with ``require_linear`` / ``require_svd`` and gets a clear
error otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ComposedLinearOperator",
    "ComposedOperator",
    "DecomposableOperator",
    "LinearOperator",
    "Operator",
    "compose",
    "conjugate_gradient",
    "require_linear",
    "require_svd",
]


class Operator(nn.Module):
    """A differentiable forward model ``y = A(x)`` (noiseless).

    Subclasses set ``x_shape`` / ``y_shape`` (without the batch dimension) and
    ``x_is_complex`` / ``y_is_complex``, and implement ``forward``.
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    x_is_complex: bool = False
    y_is_complex: bool = False
    is_linear: bool = False

    # ---- complex buffers ---------------------------------------------------------------
    def register_complex_buffer(self, name: str, value: Tensor) -> None:
        """Store a complex tensor as a real ``(..., 2)`` buffer ``name + '_ri'``."""
        if not value.is_complex():
            value = value.to(torch.complex64)
        self.register_buffer(name + "_ri", torch.view_as_real(value).clone())

    def complex_buffer(self, name: str) -> Tensor:
        return torch.view_as_complex(getattr(self, name + "_ri"))

    # ---- shape checks ------------------------------------------------------------------
    def check_x(self, x: Tensor, name: str = "x") -> None:
        _check_batch(x, self.x_shape, self.x_is_complex, name, type(self).__name__)

    def check_y(self, y: Tensor, name: str = "y") -> None:
        _check_batch(y, self.y_shape, self.y_is_complex, name, type(self).__name__)

    def __call__(self, x: Tensor) -> Tensor:  # type: ignore[override]
        self.check_x(x)
        return super().__call__(x)

    # ---- derivatives ---------------------------------------------------------------------
    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        """Vector-Jacobian product ``J_A(x)^H v`` (autograd; linear operators use the adjoint)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            y = self(x)
            (grad,) = torch.autograd.grad(y, x, grad_outputs=v)
        return grad

    def jvp(self, x: Tensor, u: Tensor) -> Tensor:
        """Jacobian-vector product ``J_A(x) u`` (forward-mode autograd)."""
        return torch.func.jvp(self.forward, (x,), (u,))[1]

    def __matmul__(self, other: Operator) -> ComposedOperator:
        return compose(self, other)

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, y_shape={self.y_shape}"


class LinearOperator(Operator):
    """A linear operator with an exact adjoint.

    The adjoint is with respect to the real inner product ``Re <a, b>`` when one side is real
    and the other complex (a real image measured as complex k-space); when both sides are
    complex it is the ordinary Hermitian adjoint.
    """

    is_linear = True

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement adjoint")

    def apply_adjoint(self, y: Tensor) -> Tensor:
        """``A^H y`` with the measurement shape checked."""
        self.check_y(y)
        return self.adjoint(y)

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        return self.adjoint(v)

    def jvp(self, x: Tensor, u: Tensor) -> Tensor:
        return self.forward(u)

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """Minimum-norm least-squares solution ``A^+ y`` by conjugate gradients on the normal
        equations (started from zero, so the iterate stays in the range of ``A^H``).
        Subclasses override this with a closed form where one exists."""
        self.check_y(y)
        return conjugate_gradient(self.normal, self.adjoint(y), tol=tol, max_iter=max_iter)

    def opnorm(self, *, iterations: int = 100, generator: torch.Generator | None = None) -> Tensor:
        """Estimate of the spectral norm ``||A||_2`` by power iteration on ``A^H A``."""
        dtype = torch.complex64 if self.x_is_complex else torch.float32
        device = _module_device(self)
        x = torch.randn((1, *self.x_shape), dtype=dtype, device=device, generator=generator)
        x = x / x.norm()
        value = torch.zeros((), device=device)
        for _ in range(iterations):
            z = self.normal(x)
            value = z.norm()
            if value == 0:
                return value
            x = z / value
        return value.sqrt()


class DecomposableOperator(LinearOperator):
    """A linear operator with a closed-form SVD ``A = U diag(s) V^H``.

    Spectral coordinates have the shape of ``x`` (``V`` is square); ``singular_values`` is
    broadcastable to ``(B, *x_shape)`` with zeros on the null space; ``u_adjoint`` maps a
    measurement to spectral coordinates (zero where ``s`` is zero) and ``u`` maps back.
    Spectral coordinates may be complex even when ``x`` is real (Fourier-diagonal operators);
    ``v`` then returns the real part.
    """

    def singular_values(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def v_adjoint(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def v(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def u_adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def u(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        self.check_y(y)
        s = self.singular_values()
        # Truncate singular values at a relative threshold, as numpy.linalg.pinv does.
        cutoff = 1e-6 * s.abs().max()
        inv = torch.where(s.abs() > cutoff, 1.0 / torch.where(s.abs() > cutoff, s, torch.ones_like(s)), torch.zeros_like(s))
        return self.v(inv * self.u_adjoint(y))

    def opnorm(self, *, iterations: int = 100, generator: torch.Generator | None = None) -> Tensor:
        return self.singular_values().abs().max()


class ComposedOperator(Operator):
    """``outer ∘ inner`` of two operators; build it with ``compose`` or ``outer @ inner``."""

    def __init__(self, outer: Operator, inner: Operator) -> None:
        super().__init__()
        if tuple(inner.y_shape) != tuple(outer.x_shape):
            raise ValueError(
                f"cannot compose: inner operator {type(inner).__name__} gives y_shape {inner.y_shape}, "
                f"outer operator {type(outer).__name__} expects x_shape {outer.x_shape}"
            )
        if inner.y_is_complex and not outer.x_is_complex:
            raise TypeError(f"cannot compose: {type(inner).__name__} gives complex output, {type(outer).__name__} expects real input")
        self.outer, self.inner = outer, inner
        self.x_shape, self.y_shape = tuple(inner.x_shape), tuple(outer.y_shape)
        self.x_is_complex, self.y_is_complex = inner.x_is_complex, outer.y_is_complex

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))


class ComposedLinearOperator(ComposedOperator, LinearOperator):
    """``outer ∘ inner`` of two linear operators, with adjoint ``inner^H ∘ outer^H``."""

    is_linear = True

    def adjoint(self, y: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))  # type: ignore[attr-defined]


def compose(outer: Operator, inner: Operator) -> ComposedOperator:
    """``outer ∘ inner`` (also written ``outer @ inner``); linear when both parts are."""
    if isinstance(outer, LinearOperator) and isinstance(inner, LinearOperator):
        return ComposedLinearOperator(outer, inner)
    return ComposedOperator(outer, inner)


def conjugate_gradient(
    normal: Callable[[Tensor], Tensor], rhs: Tensor, *, tol: float = 1e-6, max_iter: int = 100, x0: Tensor | None = None
) -> Tensor:
    """Solve ``N x = rhs`` for Hermitian positive semi-definite ``N``, each batch item on its own.

    Stops when every item's residual norm is below ``tol`` times its right-hand side norm.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = _batch_dot(r, r)
    rhs_norm2 = _batch_dot(rhs, rhs).clamp_min(torch.finfo(rs.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= tol**2 * rhs_norm2).all()):
            break
        q = normal(p)
        pq = _batch_dot(p, q)
        alpha = torch.where(pq > 0, rs / torch.where(pq > 0, pq, torch.ones_like(pq)), torch.zeros_like(pq))
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * q
        rs_new = _batch_dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + _bcast(beta, p) * p
        rs = rs_new
    return x


def require_linear(op: Operator, who: str) -> LinearOperator:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{who} needs a LinearOperator (with an exact adjoint); got {type(op).__name__}")
    return op


def require_svd(op: Operator, who: str) -> DecomposableOperator:
    if not isinstance(op, DecomposableOperator):
        raise TypeError(
            f"{who} needs an operator with a closed-form SVD (a DecomposableOperator such as Inpainting, "
            f"Blur, BoxDownsampling or single-coil MRI); got {type(op).__name__}"
        )
    return op


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Real part of the per-item inner product, shape (B,)."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _module_device(module: nn.Module) -> torch.device:
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _check_batch(t: Tensor, shape: tuple[int, ...], is_complex: bool, name: str, owner: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape[1:]) != tuple(shape) or t.ndim != len(shape) + 1:
        hint = " (real/imaginary pairs in a last axis? use torch.view_as_complex)" if t.ndim >= 1 and t.shape[-1] == 2 else ""
        raise ValueError(f"{name} has shape {tuple(t.shape)}; {owner} expects (B, {', '.join(map(str, shape))}){hint}")
    if t.is_complex() != is_complex:
        kind = "complex" if is_complex else "real"
        raise TypeError(f"{name} has dtype {t.dtype}; {owner} expects a {kind} tensor")
