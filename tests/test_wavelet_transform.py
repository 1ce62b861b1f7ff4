"""Orthonormal wavelet and spectral transforms: orthonormality in float64, PyWavelets/ptwt references, the
latent layout, configs and bad input. (The contract battery runs them too: tests/operator_cases/wavelet.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from invdiff.operators import (
    Inpainting,
    SpectralTransform,
    Synthesis,
    WaveletTransform,
    dwt_matrix,
    is_orthonormal_transform,
    transform_from_config,
    transform_to_config,
)

# (shape, wavelet, levels, mode): 2D and 3D, one and several levels, Haar, Daubechies and a symlet, both modes
CONFIGS = [
    ((1, 16, 16), "haar", 1, "periodization"),
    ((2, 16, 8), "db2", 2, "periodization"),
    ((1, 32, 32), "db4", 2, "periodization"),
    ((1, 32, 16), "sym4", 1, "periodization"),
    ((1, 32, 16), "db2", 2, "boundary"),
    ((1, 8, 8, 8), "haar", 1, "periodization"),
    ((2, 8, 8, 16), "db2", 1, "periodization"),
    ((1, 16, 8, 16), "haar", 2, "periodization"),
    ((1, 8, 8, 16), "db4", 1, "periodization"),
    ((1, 8, 16, 8), "db4", 1, "boundary"),
]
IDS = [f"{len(s) - 1}d-{w}-L{lv}-{m[:5]}-{'x'.join(map(str, s))}" for s, w, lv, m in CONFIGS]


def dense(op: torch.nn.Module, n_in: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map, float64, ``(n_out, n_in)``."""
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)
    return op(basis).reshape(n_in, -1).T


@pytest.mark.parametrize(("shape", "wavelet", "levels", "mode"), CONFIGS, ids=IDS)
def test_orthonormal_in_float64(shape: tuple[int, ...], wavelet: str, levels: int, mode: str) -> None:
    """||W x|| = ||x|| and W^T W x = x to 1e-12 (relative); the latent shape is the documented regular grid."""
    w = WaveletTransform(shape, wavelet, levels, mode)
    d = len(shape) - 1
    assert w.y_shape == (shape[0] * 2 ** (d * levels), *(s // 2**levels for s in shape[1:]))
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = w(x)
    assert z.shape == (3, *w.y_shape) and z.dtype == torch.float64
    torch.testing.assert_close(z.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(w.adjoint(z), x, rtol=0, atol=1e-12 * float(x.abs().max()))
    # and on latents: W W^T z = z, norms kept
    v = torch.randn(2, *w.y_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(w(w.adjoint(v)), v, rtol=0, atol=1e-12 * float(v.abs().max()))
    torch.testing.assert_close(w.adjoint(v).flatten(1).norm(dim=1), v.flatten(1).norm(dim=1), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("shape", "wavelet", "levels", "mode"),
    [
        ((1, 8, 8), "db2", 1, "periodization"),
        ((1, 16, 8), "haar", 2, "periodization"),
        ((1, 4, 4, 8), "db2", 1, "periodization"),
        ((2, 8, 4, 4), "haar", 1, "periodization"),
        ((1, 16, 8), "db4", 1, "boundary"),
        ((1, 16, 8), "sym4", 1, "periodization"),
    ],
)
def test_dense_matrix_is_orthogonal_and_adjoint_is_its_transpose(
    shape: tuple[int, ...], wavelet: str, levels: int, mode: str
) -> None:
    w = WaveletTransform(shape, wavelet, levels, mode)
    n = int(np.prod(shape))
    m = dense(w, n, shape)
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(m.T @ m, eye, rtol=0, atol=1e-12)  # W^T W = I
    torch.testing.assert_close(m @ m.T, eye, rtol=0, atol=1e-12)  # W W^T = I (latents)
    adjoint = dense(lambda z: w.adjoint(z), n, w.y_shape)
    torch.testing.assert_close(adjoint, m.T, rtol=0, atol=1e-14)  # the inverse is the exact adjoint
    torch.testing.assert_close(dense(w.pinv, n, w.y_shape), m.T, rtol=0, atol=1e-14)
    syn = Synthesis(w)
    torch.testing.assert_close(dense(syn, n, w.y_shape), m.T, rtol=0, atol=1e-14)


def test_haar_matches_pywavelets_exactly_with_the_documented_packing() -> None:
    """Haar, 2 levels, 2D: slot 0 = a_2, slots 1-3 = level-2 details ('ad', 'da', 'dd'), slots 4-15 = level-1
    details with each 2 x 2 block packed row-major (slot 4 + 4 s + 2 i + j holds pixel (2p + i, 2q + j))."""
    x = torch.randn(1, 1, 16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = WaveletTransform((1, 16, 8), "haar", 2)(x)[0].numpy()
    coeffs = pywt.wavedecn(x[0, 0].numpy(), "haar", level=2)
    np.testing.assert_allclose(z[0], coeffs[0], rtol=0, atol=1e-13)
    for s, key in enumerate(("ad", "da", "dd")):
        np.testing.assert_allclose(z[1 + s], coeffs[1][key], rtol=0, atol=1e-13)
        fine = np.zeros((8, 4))
        for i in range(2):
            for j in range(2):
                fine[i::2, j::2] = z[4 + 4 * s + 2 * i + j]
        np.testing.assert_allclose(fine, coeffs[2][key], rtol=0, atol=1e-13)


def test_haar_3d_and_channels_match_pywavelets() -> None:
    """3D, two channels: latent channel ``k * C + c`` is subband ``k`` (pywt ``dwtn`` key order) of channel c."""
    x = torch.randn(1, 2, 4, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z = WaveletTransform((2, 4, 6, 8), "haar")(x)[0].numpy()
    for c in range(2):
        ref = pywt.dwtn(x[0, c].numpy(), "haar")
        for k, key in enumerate(sorted(ref)):
            np.testing.assert_allclose(z[2 * k + c], ref[key], rtol=0, atol=1e-13)


@pytest.mark.parametrize(("wavelet", "levels"), [("db2", 2), ("db4", 1), ("sym4", 1), ("coif1", 2)])
def test_periodization_matches_pywavelets_everywhere(wavelet: str, levels: int) -> None:
    """``mode="periodization"`` is PyWavelets' ``wavedecn(..., mode="periodization")``, edges included, to 1e-12
    (sym4: 1e-11, the size of the polar correction of its tabulated taps; measured 1.7e-12)."""
    atol = 1e-11 if wavelet.startswith("sym") else 1e-12
    x = torch.randn(1, 1, 32, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z = WaveletTransform((1, 32, 24), wavelet, levels)(x)[0].numpy()
    ref = pywt.wavedecn(x[0, 0].numpy(), wavelet, mode="periodization", level=levels)
    np.testing.assert_allclose(z[0], ref[0], rtol=0, atol=atol)
    keys = sorted(ref[1])
    for k, key in enumerate(keys):
        np.testing.assert_allclose(z[1 + k], ref[1][key], rtol=0, atol=atol)
    if levels == 2:  # level-1 details packed 2 x 2 -> 4 slots each
        for k, key in enumerate(keys):
            for i in range(2):
                for j in range(2):
                    np.testing.assert_allclose(z[4 + 4 * k + 2 * i + j], ref[2][key][i::2, j::2], rtol=0, atol=atol)


def test_periodization_keeps_subbands_clean_and_boundary_mode_does_not() -> None:
    """A constant image: periodization puts all of it in the approximation (details exactly 0), the boundary
    wavelets' orthogonalised edge rows leak it into edge details; interiors agree with PyWavelets in both."""
    const = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    z = WaveletTransform((1, 16, 16), "db2")(const)
    torch.testing.assert_close(z[:, 0], torch.full_like(z[:, 0], 2.0), rtol=0, atol=1e-13)
    assert float(z[:, 1:].abs().max()) < 1e-13
    zb = WaveletTransform((1, 16, 16), "db2", mode="boundary")(const)
    assert float(zb[:, 1:].abs().max()) > 0.1
    x = torch.randn(1, 1, 32, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = pywt.dwtn(x[0, 0].numpy(), "db4", mode="periodization")
    zb = WaveletTransform((1, 32, 24), "db4", mode="boundary")(x)[0].numpy()
    p = pywt.Wavelet("db4").dec_len // 2 - 1  # edge coefficients that belong to boundary wavelets
    for k, key in enumerate(sorted(ref)):
        np.testing.assert_allclose(zb[k][p:-p, p:-p], ref[key][p:-p, p:-p], rtol=0, atol=1e-12)
        assert not np.allclose(zb[k][0], ref[key][0])


def test_boundary_mode_matches_ptwt_matrix_transform_over_two_levels() -> None:
    """``mode="boundary"`` gives ptwt's own sparse-matrix boundary transform (``MatrixWavedec2``)."""
    import ptwt

    x = torch.randn(2, 1, 32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    z = WaveletTransform((1, 32, 16), "db2", 2, mode="boundary")(x)
    ref = ptwt.MatrixWavedec2("db2", level=2)(x[:, 0])
    torch.testing.assert_close(z[:, 0], ref[0], rtol=0, atol=1e-12)
    for s in range(3):  # the three level-2 details, each equal to exactly one of ptwt's
        assert sum(int(torch.allclose(z[:, 1 + s], d, rtol=0, atol=1e-12)) for d in ref[1]) == 1


def test_float32_and_gradients() -> None:
    w = WaveletTransform((1, 16, 16), "db2")
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    z = w(x)
    assert z.dtype == torch.float32
    torch.testing.assert_close(w.adjoint(z), x, rtol=0, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    v = torch.randn_like(z)
    (grad,) = torch.autograd.grad(w(xg), xg, grad_outputs=v)
    torch.testing.assert_close(grad, w.adjoint(v), rtol=1e-6, atol=1e-6)
    assert w.state_dict() == {}  # the matrices follow from (shape, wavelet, levels)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_dwt_matrix_is_pywavelets_wavedec(wavelet: str) -> None:
    x = np.random.default_rng(0).standard_normal(32)
    m = dwt_matrix(wavelet, 32, 3)
    ref = np.concatenate(pywt.wavedec(x, wavelet, mode="periodization", level=3))
    np.testing.assert_allclose(m.numpy() @ x, ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(m @ m.T, torch.eye(32, dtype=torch.float64), rtol=0, atol=1e-13)


# ---- spectral -------------------------------------------------------------------------------------------
def test_spectral_wavelet_full_is_orthonormal_and_truncated_is_a_partial_isometry() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 3, 4, dtype=torch.float64, generator=g)
    full = SpectralTransform.wavelet(16, (3, 4), "db2", levels=2)
    assert full.orthonormal and is_orthonormal_transform(full)
    torch.testing.assert_close(full(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(full.adjoint(full(x)), x, rtol=0, atol=1e-12)
    cut = SpectralTransform.wavelet(16, (3, 4), "db2", levels=2, keep=4)  # the approximation a_2 only
    assert cut.y_shape == (4, 3, 4) and not cut.orthonormal
    assert is_orthonormal_transform(cut, partial=True) and not is_orthonormal_transform(cut)
    z = torch.randn(2, 4, 3, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(cut(cut.adjoint(z)), z, rtol=0, atol=1e-12)  # U^T U = I
    proj = cut.adjoint(cut(x))  # U U^T: the orthogonal projection onto the kept subspace
    torch.testing.assert_close(cut.adjoint(cut(proj)), proj, rtol=0, atol=1e-12)
    torch.testing.assert_close(((x - proj) * proj).sum(), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-10)
    # the rows are wavedec's: a flat spectrum lies entirely in the approximation, so it is kept exactly
    flat = torch.full((1, 16, 3, 4), 0.7, dtype=torch.float64)
    torch.testing.assert_close(cut.adjoint(cut(flat)), flat, rtol=0, atol=1e-12)


def test_spectral_pca_recovers_a_low_rank_subspace() -> None:
    g = torch.Generator().manual_seed(8)
    basis = torch.linalg.qr(torch.randn(20, 3, dtype=torch.float64, generator=g))[0]
    cubes = torch.einsum("kr,nrhw->nkhw", basis, torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=g))
    pca = SpectralTransform.pca(cubes, 3)
    assert pca.x_shape == (20, 5, 6) and pca.y_shape == (3, 5, 6)
    torch.testing.assert_close(pca.adjoint(pca(cubes)), cubes, rtol=0, atol=1e-12)  # the data lie in the subspace
    torch.testing.assert_close(pca.basis @ pca.basis.T, basis @ basis.T, rtol=0, atol=1e-12)
    one_cube = SpectralTransform.pca(cubes[:1], 2, spatial=(8, 8))
    assert one_cube.x_shape == (20, 8, 8)


def test_configs_round_trip_exactly() -> None:
    g = torch.Generator().manual_seed(9)
    spectral = SpectralTransform.pca(torch.randn(2, 12, 4, 4, generator=g, dtype=torch.float64), 6)
    spatial = WaveletTransform((6, 4, 4), "db2")
    for t in (
        WaveletTransform((2, 8, 8, 8), "db2", 1),
        WaveletTransform((1, 16, 8), "db4", mode="boundary"),
        spectral,
        spatial @ spectral,
    ):
        rebuilt = transform_from_config(transform_to_config(t))
        x = torch.randn(2, *t.x_shape, dtype=torch.float64, generator=g)
        torch.testing.assert_close(rebuilt(x), t(x), rtol=0, atol=0)
    import json

    text = json.dumps(transform_to_config(spectral))
    assert torch.equal(transform_from_config(json.loads(text)).basis, spectral.basis)  # repr-exact floats


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (((1, 30, 32), "haar", 2), ValueError, r"spatial size H = 30 is not divisible by 2\*\*levels = 4"),
        (((1, 32, 33), "haar", 1), ValueError, r"spatial size W = 33 is not divisible by 2\*\*levels = 2"),
        (((1, 16, 16), "db7x", 1), ValueError, r"unknown wavelet 'db7x'"),
        (((1, 16, 16), "bior2.2", 1), ValueError, r"wavelet 'bior2.2' is not orthogonal"),
        (((1, 16, 16), 3, 1), TypeError, r"wavelet must be a wavelet name"),
        (((1, 16, 16), "haar", 0), ValueError, r"levels must be an integer >= 1, got 0"),
        (((1, 16, 16), "haar", 1, "symmetric"), ValueError, r"mode must be one of 'periodization', 'boundary'"),
        (((1, 8, 8), "db4", 2), ValueError, r"too short for 2 level\(s\) of 'db4'.*4 samples.*8 taps"),
        (((16, 16), "haar", 1), ValueError, r"shape must be \(C, H, W\) or \(C, D, H, W\)"),
        (((1, 16, 16, 16, 16), "haar", 1), ValueError, r"shape must be \(C, H, W\) or \(C, D, H, W\)"),
    ],
)
def test_bad_arguments(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        WaveletTransform(*args)


def test_bad_inputs_and_spectral_arguments() -> None:
    w = WaveletTransform((1, 8, 8), "haar")
    with pytest.raises(ValueError, match=r"x has shape \(2, 1, 9, 8\); WaveletTransform expects \(B, 1, 8, 8\)"):
        w(torch.zeros(2, 1, 9, 8))
    with pytest.raises(ValueError, match=r"expects \(B, 4, 4, 4\)"):
        w.apply_adjoint(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="columns of basis must be orthonormal"):
        SpectralTransform(torch.ones(4, 2), (3, 3))
    with pytest.raises(ValueError, match=r"basis must have shape \(bands, rank\) with 1 <= rank <= bands"):
        SpectralTransform(torch.eye(3)[:, :3].T.repeat(1, 2), (3, 3))
    with pytest.raises(ValueError, match=r"keep must be an integer in \[1, bands=8\]"):
        SpectralTransform.wavelet(8, (2, 2), keep=9)
    with pytest.raises(ValueError, match=r"length = 10 is not divisible by 2\*\*levels = 4"):
        SpectralTransform.wavelet(10, (2, 2), levels=2)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, bands=5\]"):
        SpectralTransform.pca(torch.randn(2, 5, 3, 3), 6)
    with pytest.raises(ValueError, match=r"data must be cubes \(N, bands, \*spatial\), got shape \(5, 9\)"):
        SpectralTransform.pca(torch.randn(5, 9), 2)
    with pytest.raises(ValueError, match="kind must be one of"):
        transform_from_config({"kind": "vae"})
    with pytest.raises(ValueError, match="must have the keys"):
        transform_from_config({"kind": "wavelet", "shape": [1, 8, 8], "wavelet": "haar", "levels": 1})
    with pytest.raises(TypeError, match="transform must be a WaveletTransform, SpectralTransform"):
        transform_to_config(Inpainting(torch.ones(4, 4, dtype=torch.bool)))
    with pytest.raises(TypeError, match="Synthesis: transform must be a LinearOperator"):
        Synthesis("haar")  # type: ignore[arg-type]
