"""Coil maps: birdcage geometry against sigpy's simulator, normalisation, and ESPIRiT recovering
known maps from simulated multi-coil k-space."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from invdiff.operators.coil_maps import birdcage_maps, espirit_maps
from invdiff.operators.fft import fft2c, fftnc


@pytest.mark.parametrize("shape,coils", [((32, 32), 8), ((24, 40), 4), ((17, 13), 6)])
def test_birdcage_magnitudes_match_sigpy(shape: tuple[int, int], coils: int) -> None:
    """Same element geometry as sigpy.mri.birdcage_maps (elements on a circle of radius r, 1/distance
    fall-off, RSS-normalised): identical magnitudes. The phase convention is the conjugate one:
    ``S * S_sigpy`` has the constant phase pi/2."""
    sigpy_sim = pytest.importorskip("sigpy.mri.sim")
    ref = torch.from_numpy(sigpy_sim.birdcage_maps((coils, *shape), r=1.5))
    ref = ref / (ref.abs() ** 2).sum(0).sqrt()
    ours = birdcage_maps(shape, coils, dtype=torch.complex128)
    torch.testing.assert_close(ours.abs(), ref.abs(), rtol=1e-10, atol=1e-12)
    product = ours * ref
    torch.testing.assert_close(product / product.abs(), torch.full_like(product, 1j), rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape,rings", [((16, 20), 1), ((6, 16, 20), 1), ((6, 16, 20), 2)])
def test_birdcage_normalisation_shape_and_dtype(shape: tuple[int, ...], rings: int) -> None:
    s = birdcage_maps(shape, 8, rings=rings)
    assert s.shape == (8, *shape) and s.dtype == torch.complex64
    torch.testing.assert_close((s.abs() ** 2).sum(0), torch.ones(shape), rtol=0, atol=1e-5)
    assert birdcage_maps(shape, 8, rings=rings, dtype=torch.complex128).dtype == torch.complex128


def test_birdcage_unnormalised_falloff_and_geometry() -> None:
    n = 33
    s = birdcage_maps((n, n), 4, normalize=False, radius=2.0, dtype=torch.complex128)
    # Element 0 sits at (u, v) = (2, 0): right of the image, on the centre row.
    peak = np.unravel_index(int(s[0].abs().argmax()), (n, n))
    assert peak[1] == n - 1 and peak[0] in (n // 2, n // 2 + 1)  # rows 16 and 17 are equally close to v = 0
    # |S| = 1 / distance: at the grid point (v, u) = (v_i, u_j) the distance to (2, 0) is exact.
    i, j = 5, 7
    u, v = (j - n / 2) / (n / 2), (i - n / 2) / (n / 2)
    assert float(s[0, i, j].abs()) == pytest.approx(1 / np.hypot(u - 2.0, v), rel=1e-12)
    # Elements agree in phase at the centre of the ring (the image centre for even sizes).
    c = birdcage_maps((32, 32), 4, normalize=False)[:, 16, 16]
    torch.testing.assert_close(c / c[0], torch.ones(4, dtype=c.dtype), rtol=0, atol=1e-5)


def test_birdcage_3d_rings_cover_different_slabs() -> None:
    s = birdcage_maps((8, 16, 16), 8, rings=2, normalize=False)
    first, second = s[:4].abs().sum(0), s[4:].abs().sum(0)  # ring 0 at z = -0.5, ring 1 at z = +0.5
    assert bool((first[0] > second[0]).all()) and bool((second[-1] > first[-1]).all())


def test_birdcage_errors() -> None:
    with pytest.raises(ValueError, match=r"shape must be \(H, W\) or \(D, H, W\) positive integers, got \(16,\)"):
        birdcage_maps((16,), 4)
    with pytest.raises(ValueError, match=r"shape must be .* got \(0, 16\)"):
        birdcage_maps((0, 16), 4)
    with pytest.raises(ValueError, match=r"coils must be an integer >= 1, got 0"):
        birdcage_maps((16, 16), 0)
    with pytest.raises(ValueError, match=r"radius must be a finite number > 1 .* got 0.9"):
        birdcage_maps((16, 16), 4, radius=0.9)
    with pytest.raises(ValueError, match=r"rings must be an integer >= 1 dividing coils=6, got 4"):
        birdcage_maps((4, 16, 16), 6, rings=4)
    with pytest.raises(ValueError, match=r"rings must be 1 for a 2D shape \(16, 16\), got 2"):
        birdcage_maps((16, 16), 4, rings=2)
    with pytest.raises(ValueError, match=r"dtype must be complex, got torch.float32"):
        birdcage_maps((16, 16), 4, dtype=torch.float32)


# ---- ESPIRiT ---------------------------------------------------------------------------------------
def _phantom_kspace(n: int, coils: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)).to(torch.complex64)
    maps = birdcage_maps((n, n), coils)
    return fft2c(maps * image), maps, image


def test_espirit_recovers_birdcage_maps_inside_the_object() -> None:
    pytest.importorskip("sigpy")
    kspace, maps, image = _phantom_kspace(48, 8)
    est = espirit_maps(kspace, calib_width=20)
    assert est.shape == maps.shape and est.dtype == torch.complex64
    inside = image.abs() > 0.05 * image.abs().max()
    # sigpy references the maps' phase to coil 0; do the same to the truth, then compare globally.
    truth = maps * (maps[0].conj() / maps[0].abs())
    a, b = est[:, inside], truth[:, inside]
    corr = torch.vdot(a.flatten(), b.flatten()).abs() / (a.norm() * b.norm())
    assert float(corr) > 0.95
    # Per pixel the estimate is a unit-norm vector parallel to the truth.
    pixel = (est.conj() * maps).sum(0).abs()[inside]
    assert float(pixel.min()) > 0.95
    torch.testing.assert_close((est.abs() ** 2).sum(0)[inside], torch.ones(int(inside.sum())), rtol=0, atol=1e-3)


def test_espirit_3d_volume() -> None:
    pytest.importorskip("sigpy")
    n = 12
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n),) * 3, indexing="ij")
    image = ((x**2 / 0.6 + y**2 / 0.5 + z**2 / 0.7) < 1).to(torch.complex64)
    maps = birdcage_maps((n, n, n), 4, rings=2)
    est = espirit_maps(fftnc(maps * image, 3), calib_width=8, kernel_width=3, max_iter=30)
    assert est.shape == (4, n, n, n)
    inside = image.abs() > 0
    truth = maps * (maps[0].conj() / maps[0].abs())
    a, b = est[:, inside], truth[:, inside]
    assert float(torch.vdot(a.flatten(), b.flatten()).abs() / (a.norm() * b.norm())) > 0.95


def test_espirit_follows_input_dtype() -> None:
    pytest.importorskip("sigpy")
    kspace, _, _ = _phantom_kspace(32, 4)
    assert espirit_maps(kspace.to(torch.complex128), calib_width=12, max_iter=10).dtype == torch.complex128


def test_espirit_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    kspace = torch.zeros(4, 32, 32, dtype=torch.complex64)
    with pytest.raises(TypeError, match=r"kspace must be a complex tensor .* got torch.float32"):
        espirit_maps(kspace.real)
    with pytest.raises(
        ValueError, match=r"kspace must have shape \(coils, H, W\) or \(coils, D, H, W\), got \(32, 32\)"
    ):
        espirit_maps(kspace[0])
    bad = kspace.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="kspace contains NaN or Inf"):
        espirit_maps(bad)
    with pytest.raises(ValueError, match=r"calib_width must be an integer in \(6, 32\] .* got 40"):
        espirit_maps(kspace, calib_width=40)
    with pytest.raises(ValueError, match=r"calib_width must be an integer in \(6, 32\] .* got 6"):
        espirit_maps(kspace, calib_width=6)
    with pytest.raises(ValueError, match=r"kernel_width must be an integer >= 1, got 0"):
        espirit_maps(kspace, kernel_width=0)
    with pytest.raises(ValueError, match=r"thresh must be a number in \(0, 1\), got 1.5"):
        espirit_maps(kspace, thresh=1.5)
    with pytest.raises(ValueError, match=r"crop must be a number in \[0, 1\], got -0.1"):
        espirit_maps(kspace, crop=-0.1)
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1, got 0"):
        espirit_maps(kspace, max_iter=0)
    monkeypatch.setitem(sys.modules, "sigpy.mri.app", None)  # an import of it now raises ImportError
    with pytest.raises(
        ImportError, match=r"espirit_maps needs sigpy, an optional dependency: pip install invdiff\[mri\]"
    ):
        espirit_maps(kspace)
