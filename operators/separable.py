"""Separable (Kronecker-product) linear operators with an exact SVD built from 1-D SVDs.

An operator that applies one dense matrix ``M_k`` along each axis ``k`` of ``x`` is the Kronecker
product ``A = M_0 ⊗ M_1 ⊗ ... ⊗ M_{K-1}`` acting on ``vec(x)``. If ``M_k = U_k S_k V_k^T`` then

    A = (U_0 ⊗ ... ⊗ U_{K-1}) (S_0 ⊗ ... ⊗ S_{K-1}) (V_0 ⊗ ... ⊗ V_{K-1})^T,

so the SVD of ``A`` comes from the small 1-D SVDs, and every factor is applied axis by axis
(cost of one small matmul per axis). Spectral coordinates have the shape of ``x``: the singular
values are the outer product of the 1-D singular values, each zero-padded to the length of its
axis. ``u_adjoint`` maps ``(.., m_k, ..) -> (.., n_k, ..)`` (zero-pads when ``m_k < n_k``, crops
when ``m_k > n_k``) and ``u`` does the reverse. The pseudo-inverse is the Kronecker product of
the 1-D pseudo-inverses, ``A^+ = M_0^+ ⊗ ... ⊗ M_{K-1}^+``.

This powers box/bicubic downsampling, hyperspectral super-resolution (blur + decimation) and the
spectral response (a matrix along the band axis).

Precision: the 1-D SVDs are computed once, in float64, at construction, and kept as float64
buffers together with the 1-D matrices themselves, so a float64 computation is exact to rounding
(``A = U S V^T`` to ~1e-15). Inputs of any floating dtype are accepted; the factors are cast to
the input's dtype at use, so float32 in gives float32 out. ``.to(torch.float32)`` rounds the
stored factors; moving back to float64 afterwards does not restore their precision (rebuild the
operator instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import DecomposableOperator

__all__ = ["KroneckerOperator", "SeparableOperator"]


class KroneckerOperator(DecomposableOperator):
    """``A = M_0 ⊗ M_1 ⊗ ... ⊗ M_{K-1}``: one dense real matrix per axis of ``x`` (channel axis first).

    ``matrices[k]`` has shape ``(m_k, shape[k])`` and acts along axis ``k`` of ``x`` (axis ``k + 1`` of
    the batched tensor); ``None`` is the identity on that axis. So ``y_shape[k] = m_k`` (or ``shape[k]``).

    Args:
        shape: ``x_shape`` without the batch dimension, e.g. ``(C, H, W)``.
        matrices: one entry per axis of ``shape``: a real 2-D tensor ``(m_k, shape[k])`` or ``None``.

    Raises:
        ValueError: ``shape`` is not a sequence of positive ints; ``matrices`` has the wrong length;
            a matrix has the wrong shape or holds NaN/Inf.
        TypeError: a matrix is not a real tensor.

    Examples:
        >>> a_h = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
        >>> op = KroneckerOperator((1, 3, 2), [None, a_h, None])
        >>> op(torch.ones(1, 1, 3, 2)).shape
        torch.Size([1, 1, 2, 2])
    """

    # Subclasses whose user-facing ``matrices`` skip leading axes shift the index in error messages.
    _name_offset: int = 0

    def __init__(self, shape: Sequence[int], matrices: Sequence[Tensor | None]) -> None:
        super().__init__()
        shape = _check_shape(shape, "shape")
        if not isinstance(matrices, Sequence) or isinstance(matrices, Tensor) or len(matrices) != len(shape):
            got = len(matrices) if isinstance(matrices, Sequence) else type(matrices).__name__
            raise ValueError(f"matrices must be a sequence with one entry per axis of shape {shape}, got {got}")
        self.x_shape = shape
        self.axes: tuple[int, ...] = tuple(k for k, m in enumerate(matrices) if m is not None)
        y_shape = list(shape)
        # A float64 scalar that follows .to(); it fixes device/dtype when no axis has a matrix.
        self.register_buffer("_ref", torch.zeros((), dtype=torch.float64), persistent=False)
        for k in self.axes:
            m = _check_matrix(matrices[k], f"matrices[{k - self._name_offset}]", shape[k])
            u, s, vh = torch.linalg.svd(m, full_matrices=True)
            self.register_buffer(f"matrix_{k}", m)
            self.register_buffer(f"u_{k}", u)
            self.register_buffer(f"s_{k}", s)
            self.register_buffer(f"v_{k}", vh.mT.contiguous())
            y_shape[k] = m.shape[0]
        self.y_shape = tuple(y_shape)

    # ---- factors -------------------------------------------------------------------------
    def _factor(self, name: str, k: int) -> Tensor:
        return getattr(self, f"{name}_{k}")

    def matrix(self, k: int) -> Tensor | None:
        """The 1-D matrix ``M_k`` along axis ``k`` of ``x`` (``None`` for the identity)."""
        return self._factor("matrix", k) if k in self.axes else None

    # ---- operator --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        for k in self.axes:
            x = _apply_along(x, self._factor("matrix", k), k + 1)
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        for k in self.axes:
            y = _apply_along(y, self._factor("matrix", k).mT, k + 1)
        return y

    def normal(self, x: Tensor) -> Tensor:
        for k in self.axes:
            m = self._factor("matrix", k)
            x = _apply_along(x, m.mT @ m, k + 1)
        return x

    # ---- SVD -------------------------------------------------------------------------------
    def singular_values(self) -> Tensor:
        """Outer product of the zero-padded 1-D singular values, shape ``x_shape`` (a broadcast view)."""
        ref = self._ref
        out = torch.ones((1,) * len(self.x_shape), dtype=ref.dtype, device=ref.device)
        for k in self.axes:
            s = self._factor("s", k)
            padded = torch.zeros(self.x_shape[k], dtype=s.dtype, device=s.device)
            padded[: s.shape[0]] = s
            view = [1] * len(self.x_shape)
            view[k] = self.x_shape[k]
            out = out * padded.view(view)
        return out.expand(self.x_shape)

    def v_adjoint(self, x: Tensor) -> Tensor:
        for k in self.axes:
            x = _apply_along(x, self._factor("v", k).mT, k + 1)
        return x

    def v(self, z: Tensor) -> Tensor:
        for k in self.axes:
            z = _apply_along(z, self._factor("v", k), k + 1)
        return z

    def u_adjoint(self, y: Tensor) -> Tensor:
        for k in self.axes:
            u = self._factor("u", k)
            rank = self._factor("s", k).shape[0]
            # Only the first min(m, n) left singular vectors meet a (possibly non-zero) singular value.
            y = _resize_axis(_apply_along(y, u[:, :rank].mT, k + 1), k + 1, self.x_shape[k])
        return y

    def u(self, z: Tensor) -> Tensor:
        for k in self.axes:
            u = self._factor("u", k)
            rank = self._factor("s", k).shape[0]
            z = _apply_along(_resize_axis(z, k + 1, rank), u[:, :rank], k + 1)
        return z

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """``A^+ y = (M_0^+ ⊗ ... ⊗ M_{K-1}^+) y`` in closed form (``tol``/``max_iter`` are unused).

        Each 1-D pseudo-inverse drops the singular values below ``max(m, n) * eps(float64) * s_max``
        (the ``torch.linalg.pinv`` default), i.e. only numerically zero ones.
        """
        self.check_y(y)
        for k in self.axes:
            y = _apply_along(y, self._pinv_matrix(k), k + 1)
        return y

    def _pinv_matrix(self, k: int) -> Tensor:
        u, s, v = self._factor("u", k), self._factor("s", k), self._factor("v", k)
        if s.numel() == 0 or float(s.max()) == 0.0:
            return torch.zeros(v.shape[0], u.shape[0], dtype=s.dtype, device=s.device)
        cutoff = max(u.shape[0], v.shape[0]) * torch.finfo(torch.float64).eps * s.max()
        keep = int((s > cutoff).sum())
        return (v[:, :keep] / s[:keep]) @ u[:, :keep].mT

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, y_shape={self.y_shape}, axes={self.axes}"


class SeparableOperator(KroneckerOperator):
    """One dense 1-D matrix per spatial axis, the same for every channel: ``A = I_C ⊗ A_H ⊗ A_W`` (``⊗ A_D`` in 3D).

    ``x`` is ``(B, C, n_1, ..., n_K)`` and ``y`` is ``(B, C, m_1, ..., m_K)``; ``matrices[k]`` has shape
    ``(m_k, n_k)``. The exact SVD, the adjoint and the pseudo-inverse all act axis by axis (see the
    module docstring). Downsampling and hyperspectral super-resolution are subclasses.

    Args:
        matrices: one real 2-D tensor ``(m_k, n_k)`` per spatial axis (``None``: identity on that axis,
            which then needs ``spatial_shape``).
        channels: number of channels ``C`` (>= 1); every channel is mapped by the same matrices.
        spatial_shape: ``(n_1, ..., n_K)``; optional when every axis has a matrix (read from the matrices).

    Raises:
        ValueError: ``channels`` < 1, no matrices, or inconsistent ``spatial_shape``.

    Examples:
        >>> a = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
        >>> op = SeparableOperator([a, a], channels=3)
        >>> op.x_shape, op.y_shape
        ((3, 4, 4), (3, 2, 2))
    """

    def __init__(
        self, matrices: Sequence[Tensor | None], *, channels: int = 1, spatial_shape: Sequence[int] | None = None
    ) -> None:
        if not isinstance(matrices, Sequence) or isinstance(matrices, Tensor) or len(matrices) == 0:
            raise ValueError(f"matrices must be a non-empty sequence of 2-D tensors (one per spatial axis), got {matrices!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got {channels!r}")
        if spatial_shape is None:
            if any(m is None for m in matrices):
                raise ValueError("spatial_shape is required when some axis has no matrix (None)")
            spatial = []
            for k, m in enumerate(matrices):
                if not isinstance(m, Tensor) or m.ndim != 2:
                    raise ValueError(f"matrices[{k}] must be a 2-D tensor (m, n), got {_describe(m)}")
                spatial.append(int(m.shape[1]))
        else:
            spatial = list(_check_shape(spatial_shape, "spatial_shape"))
            if len(spatial) != len(matrices):
                raise ValueError(
                    f"spatial_shape {tuple(spatial)} has {len(spatial)} axes but {len(matrices)} matrices were given"
                )
        super().__init__((channels, *spatial), [None, *matrices])

    _name_offset = 1  # matrices[k] here is axis k + 1 of x (after the channel axis)


# ---- helpers shared with the downsampling and hyperspectral operators -----------------------
def _apply_along(x: Tensor, m: Tensor, dim: int) -> Tensor:
    """``m`` (p, n) applied along axis ``dim`` of ``x``: that axis goes from length n to p."""
    m = m.to(dtype=x.dtype, device=x.device)
    if dim == x.ndim - 1 or dim == -1:
        return x @ m.mT
    return torch.movedim(torch.movedim(x, dim, -1) @ m.mT, -1, dim)


def _resize_axis(x: Tensor, dim: int, size: int) -> Tensor:
    """Crop axis ``dim`` to its first ``size`` entries, or zero-pad it at the end to ``size``."""
    n = x.shape[dim]
    if n >= size:
        return x.narrow(dim, 0, size)
    pad_shape = list(x.shape)
    pad_shape[dim] = size - n
    return torch.cat([x, x.new_zeros(pad_shape)], dim=dim)


def _check_shape(shape: object, name: str) -> tuple[int, ...]:
    if isinstance(shape, Tensor) or not isinstance(shape, Sequence) or len(shape) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape!r}")
    out = []
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {tuple(shape)!r}")
        out.append(int(n))
    return tuple(out)


def _check_matrix(m: object, name: str, n: int) -> Tensor:
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.is_complex() or m.dtype == torch.bool:
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {m.dtype}")
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] != n:
        raise ValueError(f"{name} must have shape (m, {n}) with m >= 1, got {tuple(m.shape)}")
    m = m.detach().to(torch.float64).clone()
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return m


def _describe(m: object) -> str:
    return f"shape {tuple(m.shape)}" if isinstance(m, Tensor) else type(m).__name__
