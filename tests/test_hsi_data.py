"""Synthetic hyperspectral scenes from real earthlib spectra and real scikit-image photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("earthlib")  # the optional extra "hsi"

from invdiff.hsi_data import SCENES, earthlib_library, make_scene, scene_parts, wavelengths  # noqa: E402


def test_library_read_with_numpy_matches_header() -> None:
    spectra, wl, classes = earthlib_library()
    assert spectra.shape == (7261, 180) and spectra.dtype == np.float32
    assert wl[0] == pytest.approx(400.0) and wl[-1] == pytest.approx(2450.0)
    assert np.all(np.diff(wl) > 0)
    assert classes.count("soil") == 4185 and classes.count("canopy") == 2000
    assert 0.0 <= spectra.min() and spectra.max() < 1.1  # reflectances


def test_at_least_three_scenes_of_the_required_size() -> None:
    assert len(SCENES) >= 3
    x = make_scene(SCENES[0])
    assert x.shape == (31, 128, 128) and x.dtype == torch.float32


@pytest.mark.parametrize("name", SCENES)
def test_scene_deterministic_in_unit_range_and_mixing(name: str) -> None:
    parts = scene_parts(name, size=32, bands=16)
    a = parts.abundances
    assert a.shape == (6, 32, 32)
    assert a.min() >= 0
    np.testing.assert_allclose(a.sum(0), 1.0, atol=1e-12)
    assert 0 <= parts.blend.min() and parts.blend.max() <= 1
    x = make_scene(name, size=32, bands=16)
    assert float(x.min()) >= 0 and float(x.max()) == pytest.approx(1.0)
    assert torch.equal(x, make_scene(name, size=32, bands=16))
    # The cube is the normalised, shaded linear mixture of the real spectra (an independent recomputation).
    spec = parts.spectra
    mix = np.einsum("phw,pb->bhw", a * (1 - parts.blend), spec[:, 0]) + np.einsum("phw,pb->bhw", a * parts.blend, spec[:, 1])
    ref = parts.shading * mix
    np.testing.assert_allclose(x.numpy(), ref / ref.max(), rtol=1e-6, atol=1e-7)
    # Low-rank by construction: rank <= 2 x 6 materials.
    assert np.linalg.matrix_rank(ref.reshape(16, -1), tol=1e-10 * ref.max()) <= 12


def test_spectra_are_real_library_members_resampled() -> None:
    parts = scene_parts("coffee", size=16, bands=31)
    spectra, wl, _ = earthlib_library()
    grid = wavelengths(31)
    resampled = np.stack([np.interp(grid, wl, s) for s in spectra.astype(np.float64)])
    for e in parts.spectra.reshape(-1, 31):
        assert np.min(np.abs(resampled - e).max(1)) < 1e-12


def test_scenes_differ() -> None:
    cubes = [make_scene(n, size=32, bands=8) for n in SCENES]
    for i in range(len(cubes)):
        for j in range(i + 1, len(cubes)):
            assert float((cubes[i] - cubes[j]).abs().mean()) > 0.02


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown scene 'lena'; choose from: coffee"):
        make_scene("lena")
    with pytest.raises(ValueError, match=r"bands must be an integer in \[2, 180\], got 500"):
        make_scene("coffee", bands=500)
    with pytest.raises(ValueError, match=r"size must be an integer in \[16, 512\], got 8"):
        make_scene("coffee", size=8)
