"""Orthonormal wavelet and spectral transforms: latent spaces in which ``A ∘ W^T`` keeps an exact adjoint.

Why orthonormal. If ``W`` is orthonormal (``W^T W = I`` and ``W W^T = I``) then the inverse transform *is* the
adjoint, ``W^{-1} = W^T``, and a measurement ``y = A x`` of the image ``x = W^T z`` is the linear measurement
``A' z = A W^T z`` of the latent ``z`` with the exact adjoint ``A'^T = W A^T``. A diffusion prior trained on
``z`` then runs with any sampler, unchanged (``invdiff.samplers.wavelet_latent``). Norms, Gaussian noise
and ``N(0, I)`` are the same in both spaces.

Wavelets (``WaveletTransform``). Each level applies a 1-D orthogonal analysis matrix along every spatial axis
(rows ``[0, n/2)`` low-pass, ``[n/2, n)`` high-pass, at stride 2). Two boundary treatments keep it orthonormal:

* ``mode="periodization"`` (default): the signal is treated as periodic, exactly PyWavelets'
  ``mode="periodization"`` (the matrix *is* ``pywt.dwt`` applied to the identity). Every row is a true
  low-pass or high-pass filter (a constant image has zero details everywhere), at the price of wrapping
  the last samples onto the first (detail energy at the edges of an image that is not zero there).
* ``mode="boundary"``: ptwt's boundary-wavelet matrix (``ptwt.matmul_transform.construct_boundary_a``):
  the interior rows are the same filters, the rows that touch an edge are orthogonalised (QR), so nothing
  wraps; but the QR mixes low- and high-pass content in the edge rows (a constant image gives non-zero
  edge details and altered edge approximations).

The usual padding modes (zero, symmetric, reflect, periodic *padding*) are not orthonormal: they return
more coefficients than samples. For Haar on even sizes both modes coincide. Any orthogonal wavelet works
(Haar, Daubechies ``dbN``, symlets ``symN``, coiflets ``coifN``). The matrices are built once, in float64,
at construction and checked (``|A A^T - I| <= 1e-10``); symlets' tabulated taps are orthogonal only to
~5e-13, so a matrix whose error exceeds 1e-14 is replaced by its nearest orthogonal matrix (the polar factor
``U V^T`` of its SVD, a change of the same ~1e-13 size). They are applied densely along each axis (one small
matmul per axis and level). Only the Mallat tree is used: each level splits the current low-pass band.

Latent layout. One level in ``d`` spatial dimensions gives ``2^d`` subbands at half the size, in the order
of PyWavelets' ``dwtn`` keys (``"aa", "ad", "da", "dd"`` in 2D; the letter for the first spatial axis
first; ``a`` low-pass, ``d`` high-pass). With ``levels = L`` the detail subbands of the finer levels are
packed onto the coarsest grid by space-to-depth (the ``f^d`` pixels of each ``f x f`` block, ``f =
2^(L - l)`` for level ``l``, become ``f^d`` channels in row-major order), so the latent is a regular grid
``(C * 2^(d L), *spatial / 2^L)`` whose channels are, for image channel ``c`` and latent slot ``k``,
``k * C + c`` (subband-major: the first ``C`` channels are the coarse approximation). Slots run
coarse to fine: ``[a_L, details of level L, details of level L-1 (packed), ..., details of level 1
(packed)]``. The packing is a permutation, so the transform stays orthonormal.

Spectra (``SpectralTransform``). For cubes ``(bands, *spatial)`` a matrix with orthonormal columns ``U``
(``bands x rank``) acts along the band axis: ``z = U^T x``. With ``rank = bands`` it is orthonormal; with
``rank < bands`` it is a *partial isometry*: ``U^T U = I`` (the decoder ``U`` is an isometry and
``encode(decode(z)) = z``), but ``decode(encode(x)) = U U^T x`` is the orthogonal projection onto the kept
spectral subspace. ``A' = A U`` still has the exact adjoint ``U^T A^T``; the prior then only models the kept
subspace, and the reconstruction lies in it. Bases: a 1-D DWT along the bands (``SpectralTransform.wavelet``,
coarse rows first, optionally truncated) or the leading left singular vectors of data
(``SpectralTransform.pca``).

``Synthesis(T)`` is the decoder ``T^T`` as an operator (forward ``T.adjoint``, adjoint ``T.forward``), so a
measurement in latent coordinates is ``op @ Synthesis(T)``. Transforms round-trip through JSON-able configs
(``transform_to_config`` / ``transform_from_config``), which prior checkpoints record.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import ComposedLinearOperator, LinearOperator

__all__ = [
    "SpectralTransform",
    "Synthesis",
    "WaveletTransform",
    "dwt_matrix",
    "is_orthonormal_transform",
    "transform_from_config",
    "transform_to_config",
]

# Largest |A A^T - I| accepted for a float64 analysis matrix (measured: <= 1e-15 for haar/dbN/coifN,
# 5e-13 for sym4, whose tabulated filter taps carry fewer digits); above _POLAR_TOL the matrix is replaced by
# its nearest orthogonal matrix.
_ORTHONORMAL_TOL = 1e-10
_POLAR_TOL = 1e-14
MODES = ("periodization", "boundary")


# ---- 1-D matrices -----------------------------------------------------------------------------------------
def _check_wavelet(wavelet: object, who: str) -> Any:
    import pywt

    if not isinstance(wavelet, str):
        raise TypeError(f"{who}: wavelet must be a wavelet name such as 'haar' or 'db2', got {type(wavelet).__name__}")
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(
            f"{who}: unknown wavelet {wavelet!r}; expected an orthogonal PyWavelets name such as 'haar', 'db2', "
            "'db4', 'sym4' or 'coif1'"
        )
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(
            f"{who}: wavelet {wavelet!r} is not orthogonal (biorthogonal wavelets give no orthonormal transform); "
            "use 'haar', 'dbN', 'symN' or 'coifN'"
        )
    return w


def _check_levels(levels: object, who: str) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{who}: levels must be an integer >= 1, got {levels!r}")
    return levels


def _check_length(length: int, levels: int, dec_len: int, wavelet: str, what: str, who: str) -> None:
    if length % (2**levels):
        raise ValueError(
            f"{who}: {what} = {length} is not divisible by 2**levels = {2**levels} (levels={levels}); "
            "crop or pad the data to a multiple"
        )
    coarsest = length >> (levels - 1)
    if coarsest < dec_len:
        raise ValueError(
            f"{who}: {what} = {length} is too short for {levels} level(s) of {wavelet!r}: the last level sees "
            f"{coarsest} samples, fewer than the filter's {dec_len} taps; use fewer levels or a shorter wavelet"
        )


def _check_mode(mode: object, who: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"{who}: mode must be one of {', '.join(map(repr, MODES))} (orthonormal boundary handling), got {mode!r}"
        )
    return mode  # type: ignore[return-value]


def _analysis_matrix(wavelet: str, length: int, mode: str = "periodization") -> Tensor:
    """One level of the orthonormal DWT, dense ``(length, length)`` float64: rows ``[0, length/2)`` low-pass,
    ``[length/2, length)`` high-pass (module docstring: ``mode``)."""
    if mode == "periodization":
        import numpy as np
        import pywt

        low, high = pywt.dwt(np.eye(length), wavelet, mode="periodization", axis=0)
        a = torch.from_numpy(np.concatenate([low, high], axis=0)).to(torch.float64)
    else:
        from ptwt.matmul_transform import construct_boundary_a

        with warnings.catch_warnings():
            # torch warns that sparse invariant checks are off while ptwt assembles its sparse matrices
            warnings.simplefilter("ignore", UserWarning)
            a = construct_boundary_a(wavelet, length, dtype=torch.float64).to_dense()
    eye = torch.eye(length, dtype=torch.float64)
    if float((a @ a.T - eye).abs().max()) > _POLAR_TOL:
        u, _, vh = torch.linalg.svd(a)
        a = u @ vh
    error = float((a @ a.T - eye).abs().max())
    if error > _ORTHONORMAL_TOL:  # pragma: no cover - guards against a change in pywt/ptwt
        raise ValueError(f"the {wavelet!r} analysis matrix of length {length} is not orthonormal (error {error:.1e})")
    return a


def dwt_matrix(wavelet: str, length: int, levels: int = 1, mode: str = "periodization") -> Tensor:
    """The orthonormal ``levels``-level 1-D DWT as a dense ``(length, length)`` float64 matrix.

    Rows are ordered as PyWavelets' ``wavedec`` output: ``[a_L, d_L, d_{L-1}, ..., d_1]`` (coarse first);
    with ``mode="periodization"`` it is ``pywt.wavedec(x, wavelet, "periodization", levels)`` exactly.

    Raises:
        TypeError / ValueError: unknown or non-orthogonal wavelet, ``levels < 1``, ``length`` not divisible
            by ``2**levels`` or too short for the filter.
    """
    who = "dwt_matrix"
    w = _check_wavelet(wavelet, who)
    levels = _check_levels(levels, who)
    mode = _check_mode(mode, who)
    _check_length(int(length), levels, w.dec_len, wavelet, "length", who)
    out = torch.eye(length, dtype=torch.float64)
    n = length
    for _ in range(levels):
        step = torch.eye(length, dtype=torch.float64)
        step[:n, :n] = _analysis_matrix(wavelet, n, mode)
        out = step @ out
        n //= 2
    return out


# ---- the spatial wavelet transform ---------------------------------------------------------------------------
class _OrthonormalRows(LinearOperator):
    """An encoder ``W`` with ``W W^T = I`` (orthonormal rows): its pseudo-inverse is ``W^T`` (its inverse when ``W`` is
    square, as a full wavelet transform is) and its operator norm is 1, in closed form."""

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        """``W^+ y = W^T y`` (``tol``/``max_iter`` are unused)."""
        self.check_y(y)
        return self.adjoint(y)

    def opnorm(self, *, iterations: int = 100, generator: torch.Generator | None = None) -> Tensor:
        return torch.ones((), dtype=torch.float64)


class WaveletTransform(_OrthonormalRows):
    """Orthonormal 2D/3D discrete wavelet transform, image ``(B, C, *spatial)`` -> latent grid ``(B, K*C, *coarse)``.

    ``K = 2^(d * levels)`` slots per image channel on the grid ``coarse = spatial / 2^levels`` (module
    docstring: layout and boundary handling). ``adjoint`` is the exact inverse (``pinv`` too).

    Args:
        shape: ``x_shape`` ``(C, H, W)`` or ``(C, D, H, W)``.
        wavelet: an orthogonal PyWavelets name: ``"haar"``, ``"db2"``, ``"db4"``, ``"sym4"``, ``"coif1"``, ...
        levels: decomposition levels ``L >= 1``; every spatial size must be divisible by ``2^L`` and be at
            least the filter length at the last level.
        mode: ``"periodization"`` (PyWavelets' coefficients exactly) or ``"boundary"`` (ptwt's boundary
            wavelets); both orthonormal (module docstring).

    Precision: the matrices are float64 buffers (not saved in ``state_dict``: they follow from the arguments),
    cast to the input's dtype at use, so float32 inputs give float32 outputs. ``.to(torch.float32)`` rounds
    them; rebuild the transform for float64 work afterwards.

    Raises:
        TypeError: ``wavelet`` not a string.
        ValueError: bad ``shape``, unknown or non-orthogonal wavelet, ``levels < 1``, unknown ``mode``, sizes
            not divisible by ``2**levels`` or too small for the filter.

    Examples:
        >>> w = WaveletTransform((1, 64, 64), "haar", levels=1)
        >>> z = w(torch.randn(2, 1, 64, 64))
        >>> z.shape, torch.allclose(w.adjoint(z).norm(), z.norm())
        (torch.Size([2, 4, 32, 32]), True)
    """

    orthonormal = True

    def __init__(
        self, shape: Sequence[int], wavelet: str = "haar", levels: int = 1, mode: str = "periodization"
    ) -> None:
        super().__init__()
        who = "WaveletTransform"
        if (
            isinstance(shape, (str, bytes))
            or not isinstance(shape, Sequence)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
        ):
            raise ValueError(f"{who}: shape must be (C, H, W) or (C, D, H, W) with positive ints, got {shape!r}")
        shape = tuple(shape)
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ValueError(f"{who}: shape must be (C, H, W) or (C, D, H, W) with positive ints, got {shape}")
        w = _check_wavelet(wavelet, who)
        levels = _check_levels(levels, who)
        mode = _check_mode(mode, who)
        spatial = shape[1:]
        names = ("H", "W") if len(spatial) == 2 else ("D", "H", "W")
        for size, name in zip(spatial, names, strict=True):
            _check_length(size, levels, w.dec_len, wavelet, f"spatial size {name}", who)
        self.wavelet, self.levels, self.mode = wavelet, levels, mode
        self.dims = len(spatial)
        self.slots = 2 ** (self.dims * levels)
        self.x_shape = shape
        self.y_shape = (shape[0] * self.slots, *(s >> levels for s in spatial))
        lengths = sorted({s >> level for s in spatial for level in range(levels)})
        for n in lengths:
            self.register_buffer(f"analysis_{n}", _analysis_matrix(wavelet, n, mode), persistent=False)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.x_shape[1:])

    def _matrix(self, n: int, like: Tensor) -> Tensor:
        return getattr(self, f"analysis_{n}").to(dtype=like.dtype, device=like.device)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        v = x.reshape(b * c, *x.shape[2:])
        details = []
        for _ in range(self.levels):
            for axis in range(1, self.dims + 1):
                v = _apply_along(v, self._matrix(v.shape[axis], v), axis)
            bands = _split_subbands(v, self.dims)  # (N, 2^d, *half)
            details.append(bands[:, 1:])
            v = bands[:, 0]
        blocks = [v[:, None]]
        for level in reversed(range(self.levels)):  # coarse to fine
            blocks.append(_space_to_depth(details[level], 2 ** (self.levels - 1 - level), self.dims))
        z = torch.cat(blocks, dim=1)  # (N, K, *coarse)
        coarse = z.shape[2:]
        return z.reshape(b, c, self.slots, *coarse).transpose(1, 2).reshape(b, self.slots * c, *coarse)

    def adjoint(self, z: Tensor) -> Tensor:
        b = z.shape[0]
        c = self.x_shape[0]
        coarse = z.shape[2:]
        u = z.reshape(b, self.slots, c, *coarse).transpose(1, 2).reshape(b * c, self.slots, *coarse)
        per_level = 2**self.dims - 1
        v = u[:, 0]
        start = 1
        for level in reversed(range(self.levels)):  # coarse to fine, as packed
            factor = 2 ** (self.levels - 1 - level)
            width = per_level * factor**self.dims
            detail = _depth_to_space(u[:, start : start + width], factor, self.dims)
            start += width
            v = _merge_subbands(torch.cat([v[:, None], detail], dim=1), self.dims)
            for axis in range(1, self.dims + 1):
                v = _apply_along(v, self._matrix(v.shape[axis], v).mT, axis)
        return v.reshape(b, c, *v.shape[1:])

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": "wavelet",
            "shape": list(self.x_shape),
            "wavelet": self.wavelet,
            "levels": self.levels,
            "mode": self.mode,
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, wavelet={self.wavelet!r}, levels={self.levels}, mode={self.mode!r}"


# ---- the spectral transform -------------------------------------------------------------------------------
class SpectralTransform(_OrthonormalRows):
    """``z = U^T x`` along the band axis: cube ``(B, bands, *spatial)`` -> ``(B, rank, *spatial)``.

    ``U`` (``bands x rank``) has orthonormal columns: orthonormal for ``rank = bands``, a partial isometry
    otherwise (module docstring). Build it from a basis, ``SpectralTransform.wavelet`` or
    ``SpectralTransform.pca``.

    Args:
        basis: ``U``, a real ``(bands, rank)`` tensor with ``|U^T U - I| <= 1e-6`` (stored as float64).
        spatial: the spatial shape of the cubes, e.g. ``(H, W)`` (any number of axes >= 1).

    Raises:
        TypeError: ``basis`` not a real tensor.
        ValueError: ``basis`` not 2-D, ``rank > bands``, non-finite, columns not orthonormal; bad ``spatial``.
    """

    def __init__(self, basis: Tensor, spatial: Sequence[int]) -> None:
        super().__init__()
        who = "SpectralTransform"
        if not isinstance(basis, Tensor) or basis.is_complex() or not basis.is_floating_point():
            raise TypeError(f"{who}: basis must be a real floating tensor (bands, rank), got {type(basis).__name__}")
        if basis.ndim != 2 or not 1 <= basis.shape[1] <= basis.shape[0]:
            raise ValueError(
                f"{who}: basis must have shape (bands, rank) with 1 <= rank <= bands, got {tuple(basis.shape)}"
            )
        if not bool(torch.isfinite(basis).all()):
            raise ValueError(f"{who}: basis contains NaN or inf")
        u = basis.detach().to(torch.float64).clone()
        error = float((u.T @ u - torch.eye(u.shape[1], dtype=torch.float64)).abs().max())
        if error > 1e-6:
            raise ValueError(f"{who}: the columns of basis must be orthonormal; max |U^T U - I| = {error:.2e}")
        if (
            isinstance(spatial, (str, bytes))
            or not isinstance(spatial, Sequence)
            or len(spatial) < 1
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in spatial)
        ):
            raise ValueError(f"{who}: spatial must be a non-empty sequence of positive ints, got {spatial!r}")
        self.register_buffer("basis", u)
        self.bands, self.rank = u.shape
        self.x_shape = (self.bands, *spatial)
        self.y_shape = (self.rank, *spatial)

    @property
    def orthonormal(self) -> bool:
        """``rank == bands``: ``U`` is square and orthogonal (otherwise a partial isometry)."""
        return self.rank == self.bands

    @classmethod
    def wavelet(
        cls,
        bands: int,
        spatial: Sequence[int],
        wavelet: str = "haar",
        levels: int = 1,
        keep: int | None = None,
        mode: str = "periodization",
    ) -> SpectralTransform:
        """A ``levels``-level orthonormal DWT along the bands (``dwt_matrix``, rows coarse first), keeping the
        first ``keep`` rows.

        ``keep=None`` keeps all (orthonormal); ``keep = bands / 2^levels`` keeps the approximation only.
        """
        who = "SpectralTransform.wavelet"
        if isinstance(bands, bool) or not isinstance(bands, int) or bands < 2:
            raise ValueError(f"{who}: bands must be an integer >= 2, got {bands!r}")
        keep = bands if keep is None else keep
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= bands:
            raise ValueError(f"{who}: keep must be an integer in [1, bands={bands}] or None, got {keep!r}")
        return cls(dwt_matrix(wavelet, bands, levels, mode)[:keep].T, spatial)

    @classmethod
    def pca(cls, data: Tensor, rank: int, spatial: Sequence[int] | None = None) -> SpectralTransform:
        """The ``rank`` leading left singular vectors of the pixel spectra of ``data`` (uncentred).

        Uncentred because a mean offset would make the map affine and lose the plain adjoint; the first
        vector then carries the mean spectrum. Each vector's sign makes its largest-magnitude entry positive.

        Args:
            data: cubes ``(N, bands, *spatial)`` (one cube: ``cube[None]``).
            rank: number of vectors kept, ``1 <= rank <= bands``.
            spatial: spatial shape of the cubes the transform will take; default: that of ``data``.
        """
        who = "SpectralTransform.pca"
        if not isinstance(data, Tensor) or data.is_complex() or not data.is_floating_point():
            raise TypeError(
                f"{who}: data must be a real floating tensor (N, bands, *spatial), got {type(data).__name__}"
            )
        if data.ndim < 3:
            raise ValueError(f"{who}: data must be cubes (N, bands, *spatial), got shape {tuple(data.shape)}")
        bands = data.shape[1]
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= bands:
            raise ValueError(f"{who}: rank must be an integer in [1, bands={bands}], got {rank!r}")
        spectra = data.detach().to(torch.float64).transpose(0, 1).reshape(bands, -1)
        u = torch.linalg.svd(spectra, full_matrices=False)[0][:, :rank]
        signs = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
        return cls(u * signs, tuple(data.shape[2:]) if spatial is None else spatial)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("kr,bk...->br...", self.basis.to(x.dtype), x)

    def adjoint(self, z: Tensor) -> Tensor:
        return torch.einsum("kr,br...->bk...", self.basis.to(z.dtype), z)

    def to_config(self) -> dict[str, Any]:
        # repr-exact floats: json writes Python floats with enough digits to read back the same float64
        return {"kind": "spectral", "spatial": list(self.x_shape[1:]), "basis": self.basis.tolist()}


# ---- the decoder as an operator -------------------------------------------------------------------------
class Synthesis(LinearOperator):
    """The decoder ``T^T`` of an analysis transform ``T`` as an operator: latent -> image.

    ``forward = T.adjoint``, ``adjoint = T.forward``. For an orthonormal or partially isometric ``T``
    (``T T^T = I`` on latents) it is an isometry and ``pinv = T.forward``; measure latents with
    ``op @ Synthesis(T)``.

    Raises:
        TypeError: ``transform`` is not a ``LinearOperator``.
    """

    def __init__(self, transform: LinearOperator) -> None:
        super().__init__()
        if not isinstance(transform, LinearOperator):
            raise TypeError(f"Synthesis: transform must be a LinearOperator, got {type(transform).__name__}")
        self.transform = transform
        self.x_shape, self.y_shape = tuple(transform.y_shape), tuple(transform.x_shape)
        self.x_is_complex, self.y_is_complex = transform.y_is_complex, transform.x_is_complex

    def forward(self, z: Tensor) -> Tensor:
        return self.transform.adjoint(z)

    def adjoint(self, x: Tensor) -> Tensor:
        return self.transform.forward(x)

    def pinv(self, y: Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> Tensor:
        if not is_orthonormal_transform(self.transform, partial=True):
            return super().pinv(y, tol=tol, max_iter=max_iter)
        self.check_y(y)
        return self.transform.forward(y)

    def opnorm(self, *, iterations: int = 100, generator: torch.Generator | None = None) -> Tensor:
        return self.transform.opnorm(iterations=iterations, generator=generator)


# ---- properties and configs ----------------------------------------------------------------------------
def is_orthonormal_transform(transform: object, *, partial: bool = False) -> bool:
    """Whether ``transform`` is a known orthonormal transform (``W^T W = W W^T = I``), or with ``partial=True``
    also a partial isometry with ``W W^T = I`` (a truncated ``SpectralTransform``, or compositions of these)."""
    if isinstance(transform, WaveletTransform):
        return True
    if isinstance(transform, SpectralTransform):
        return partial or transform.orthonormal
    if isinstance(transform, ComposedLinearOperator):
        return is_orthonormal_transform(transform.outer, partial=partial) and is_orthonormal_transform(
            transform.inner, partial=partial
        )
    return False


def transform_to_config(transform: LinearOperator) -> dict[str, Any]:
    """A JSON-able description of a ``WaveletTransform``, ``SpectralTransform`` or a composition of them.

    Raises:
        TypeError: any other operator.
    """
    if isinstance(transform, (WaveletTransform, SpectralTransform)):
        return transform.to_config()
    if isinstance(transform, ComposedLinearOperator):
        return {
            "kind": "compose",
            "outer": transform_to_config(transform.outer),
            "inner": transform_to_config(transform.inner),
        }
    raise TypeError(
        f"transform must be a WaveletTransform, SpectralTransform or a composition of them, got {type(transform).__name__}"
    )


def transform_from_config(config: Mapping[str, Any]) -> LinearOperator:
    """Rebuild a transform from ``transform_to_config`` output.

    Raises:
        ValueError: unknown ``kind``, missing or unknown keys, invalid values.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"transform config must be a mapping, got {type(config).__name__}")
    kind = config.get("kind")
    expected = {
        "wavelet": {"kind", "shape", "wavelet", "levels", "mode"},
        "spectral": {"kind", "spatial", "basis"},
        "compose": {"kind", "outer", "inner"},
    }
    if kind not in expected:
        raise ValueError(f"transform config: kind must be one of {sorted(expected)}, got {kind!r}")
    if set(config) != expected[kind]:
        raise ValueError(
            f"transform config of kind {kind!r} must have the keys {sorted(expected[kind])}, got {sorted(config)}"
        )
    try:
        if kind == "wavelet":
            return WaveletTransform(tuple(config["shape"]), config["wavelet"], config["levels"], config["mode"])
        if kind == "spectral":
            return SpectralTransform(torch.tensor(config["basis"], dtype=torch.float64), tuple(config["spatial"]))
        outer = transform_from_config(config["outer"])
        inner = transform_from_config(config["inner"])
        composed = outer @ inner
    except TypeError as err:
        raise ValueError(f"transform config {kind!r} is invalid: {err}") from err
    return composed


# ---- tensor plumbing ----------------------------------------------------------------------------------------
def _apply_along(x: Tensor, matrix: Tensor, axis: int) -> Tensor:
    """``matrix`` applied along ``axis`` of ``x``: ``out[..., i, ...] = sum_j matrix[i, j] x[..., j, ...]``."""
    return (x.movedim(axis, -1) @ matrix.mT).movedim(-1, axis)


def _split_subbands(v: Tensor, dims: int) -> Tensor:
    """``(N, n_1, ..., n_d)`` with low/high halves along each axis -> ``(N, 2^d, n_1/2, ..., n_d/2)``;
    subband index bits: high-pass along axis 1 is the most significant (PyWavelets' ``dwtn`` key order)."""
    n = v.shape[0]
    half = [s // 2 for s in v.shape[1:]]
    split = v.reshape(n, *[x for h in half for x in (2, h)])
    order = [0] + [1 + 2 * k for k in range(dims)] + [2 + 2 * k for k in range(dims)]
    return split.permute(order).reshape(n, 2**dims, *half)


def _merge_subbands(bands: Tensor, dims: int) -> Tensor:
    """Inverse of ``_split_subbands``."""
    n = bands.shape[0]
    half = list(bands.shape[2:])
    split = bands.reshape(n, *([2] * dims), *half)
    order = [0] + [x for k in range(dims) for x in (1 + k, 1 + dims + k)]
    return split.permute(order).reshape(n, *[2 * h for h in half])


def _space_to_depth(t: Tensor, factor: int, dims: int) -> Tensor:
    """``(N, S, *n)`` -> ``(N, S * factor^d, *n / factor)``: each ``factor^d`` block becomes channels (row-major)."""
    if factor == 1:
        return t
    n, s = t.shape[:2]
    small = [x // factor for x in t.shape[2:]]
    split = t.reshape(n, s, *[x for m in small for x in (m, factor)])
    order = [0, 1] + [3 + 2 * k for k in range(dims)] + [2 + 2 * k for k in range(dims)]
    return split.permute(order).reshape(n, s * factor**dims, *small)


def _depth_to_space(t: Tensor, factor: int, dims: int) -> Tensor:
    """Inverse of ``_space_to_depth``."""
    if factor == 1:
        return t
    n = t.shape[0]
    s = t.shape[1] // factor**dims
    small = list(t.shape[2:])
    split = t.reshape(n, s, *([factor] * dims), *small)
    order = [0, 1] + [x for k in range(dims) for x in (2 + dims + k, 2 + k)]
    return split.permute(order).reshape(n, s, *[m * factor for m in small])
