"""DDS2M and its VS2M networks: structure, exactness limits, reproducibility, a short real restoration, errors."""

from __future__ import annotations

import pytest
import torch

from invdiff.metrics import mpsnr
from invdiff.operators import GaussianNoise
from invdiff.operators.hyperspectral import (
    BandCompletion,
    HyperspectralDenoising,
    HyperspectralSuperResolution,
    PixelCompletion,
)
from invdiff.operators.masking import random_pixel_mask
from invdiff.samplers.dds2m import DDS2M_PRESETS, dds2m, dds2m_schedule
from invdiff.samplers.reconstruction import CALLBACK_KEYS, Reconstruction
from invdiff.vs2m import VS2M, SpatialConfig

SMALL = SpatialConfig((8, 8), (4, 4), (3, 3))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_cube(bands: int = 6, size: int = 16) -> torch.Tensor:
    """A small rank-2 cube in [0, 1] (no optional data needed)."""
    h = torch.linspace(0, 1, size)
    a = torch.stack([torch.outer(h, 1 - h), torch.outer(1 - h, h)])
    e = torch.stack([torch.linspace(0.2, 0.9, bands), torch.linspace(0.8, 0.1, bands)])
    return torch.einsum("rhw,rb->bhw", a, e).clamp(0, 1)


# ---- VS2M -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 3])
def test_vs2m_shapes_and_rank_structure(rank: int) -> None:
    net = VS2M((7, 20, 12), rank=rank, spatial=SMALL, generator=gen()).double()
    out = net()
    assert out.shape == (1, 7, 20, 12)
    a, e = net.factors()
    assert a.shape == (rank, 20, 12) and e.shape == (rank, 7)
    unfolded = out[0].reshape(7, -1).T  # HW x bands
    assert torch.linalg.matrix_rank(unfolded) <= rank
    torch.testing.assert_close(out[0], torch.einsum("rhw,rb->bhw", a, e))


def test_vs2m_deterministic_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    a = VS2M((5, 16, 16), rank=2, spatial=SMALL, generator=gen(3))()
    b = VS2M((5, 16, 16), rank=2, spatial=SMALL, generator=gen(3))()
    c = VS2M((5, 16, 16), rank=2, spatial=SMALL, generator=gen(4))()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_vs2m_errors() -> None:
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        VS2M((5, 16, 16), rank=0)
    with pytest.raises(ValueError, match=r"spatial size \(8, 8\) is too small for 6 levels"):
        from invdiff.vs2m import PAPER_SPATIAL

        VS2M((5, 8, 8), spatial=PAPER_SPATIAL)
    with pytest.raises(ValueError, match="kernels must be odd"):
        SpatialConfig((8,), (4,), (4,))


# ---- the chain ------------------------------------------------------------------------------------------
def test_identity_without_noise_returns_the_input() -> None:
    x = smooth_cube()[None]
    op = HyperspectralDenoising(x.shape[1:])
    out = dds2m(None, op, x, noise=GaussianNoise(0.0), steps=6, rank=2, spatial=SMALL, generator=gen())
    assert isinstance(out, Reconstruction)
    torch.testing.assert_close(out.x, x, atol=1e-6, rtol=0)  # float32 rounding of (2y - 1 + 1) / 2


@pytest.mark.parametrize("kind", ["voxels", "bands"])
def test_noiseless_completion_keeps_the_measured_entries(kind: str) -> None:
    x = smooth_cube()[None]
    shape = tuple(x.shape[1:])
    op = PixelCompletion(shape, random_pixel_mask(shape, 0.5, generator=gen(1))) if kind == "voxels" else BandCompletion(shape, [1, 4])
    y = op(x)
    out = dds2m(None, op, y, noise=GaussianNoise(0.0), steps=6, rank=2, spatial=SMALL, clip=False, generator=gen())
    torch.testing.assert_close(op(out.x), y, atol=1e-6, rtol=0)


def test_noiseless_super_resolution_is_data_consistent() -> None:
    x = smooth_cube(size=16)[None].double()
    op = HyperspectralSuperResolution(x.shape[1:], 2)
    y = op(x)
    out = dds2m(None, op, y, noise=GaussianNoise(0.0), steps=6, rank=2, spatial=SMALL, clip=False, generator=gen())
    assert out.x.dtype == torch.float64
    torch.testing.assert_close(op(out.x), y, atol=1e-8, rtol=0)


def test_short_run_denoises_a_real_scene() -> None:
    pytest.importorskip("earthlib")
    from invdiff.hsi_data import make_scene

    x = make_scene("chelsea", size=32, bands=16)
    op = HyperspectralDenoising(x.shape)
    y = GaussianNoise(0.1).sample(x[None], generator=gen(1))
    etas = {k: v for k, v in DDS2M_PRESETS["denoising"].items() if k.startswith("eta")}
    out = dds2m(None, op, y, noise=GaussianNoise(0.1), steps=240, start_fraction=0.25, lr=5e-3, rank=4, T=2000,
                spatial=SMALL, generator=gen(0), **etas)
    before, after = mpsnr(x, y[0].clamp(0, 1), data_range=1.0), mpsnr(x, out.x[0], data_range=1.0)
    assert after > before + 5.0, (before, after)  # measured: 20.1 -> 28.4 dB
    assert out.diagnostics["misfit"].shape == (240, 1)
    assert float(out.diagnostics["nfe"]) == 180


def test_same_seed_same_output_and_callback() -> None:
    x = smooth_cube()[None]
    op = HyperspectralDenoising(x.shape[1:])
    y = GaussianNoise(0.1).sample(x, generator=gen(1))
    seen: list[dict] = []
    kw = dict(noise=GaussianNoise(0.1), steps=8, rank=2, spatial=SMALL)
    state = torch.get_rng_state()
    a = dds2m(None, op, y, generator=gen(5), callback=seen.append, **kw)
    b = dds2m(None, op, y, generator=gen(5), **kw)
    c = dds2m(None, op, y, generator=gen(6), **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert len(seen) == 8 and all(set(CALLBACK_KEYS) <= set(d) for d in seen)
    assert [d["step"] for d in seen] == list(range(8))


def test_batch_items_are_restored_independently() -> None:
    x = torch.stack([smooth_cube(), smooth_cube().flip(-1)])
    op = HyperspectralDenoising(x.shape[1:])
    out = dds2m(None, op, x, noise=GaussianNoise(0.0), steps=4, rank=2, spatial=SMALL, generator=gen())
    torch.testing.assert_close(out.x, x, atol=1e-6, rtol=0)
    assert out.diagnostics["misfit"].shape == (4, 2)


def test_schedule_is_the_papers() -> None:
    s = dds2m_schedule(2000)
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(5e-3)


# ---- errors -------------------------------------------------------------------------------------------------
def test_band_mismatch_layout_and_batch_errors() -> None:
    op = HyperspectralDenoising((6, 16, 16))
    kw = dict(noise=GaussianNoise(0.1), steps=4)
    with pytest.raises(ValueError, match="y has 5 bands but op expects 6"):
        dds2m(None, op, torch.zeros(1, 5, 16, 16), **kw)
    with pytest.raises(ValueError, match=r"\(B, H, W, bands\); .*use y.permute\(0, 3, 1, 2\)"):
        dds2m(None, op, torch.zeros(1, 16, 16, 6), **kw)
    with pytest.raises(ValueError, match=r"without a batch axis; pass y\[None\]"):
        dds2m(None, op, torch.zeros(6, 16, 16), **kw)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        dds2m(None, op, torch.full((1, 6, 16, 16), float("nan")), **kw)
    with pytest.raises(TypeError, match="y must be a real floating-point tensor"):
        dds2m(None, op, torch.zeros(1, 6, 16, 16, dtype=torch.int64), **kw)


def test_non_svd_operator_and_bad_arguments() -> None:
    from invdiff.operators.base import LinearOperator

    class Plain(LinearOperator):
        is_linear = True

        def __init__(self) -> None:
            super().__init__()
            self.x_shape = self.y_shape = (6, 16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        def adjoint(self, y: torch.Tensor) -> torch.Tensor:
            return 2 * y

    y = torch.zeros(1, 6, 16, 16)
    with pytest.raises(TypeError, match="dds2m needs an operator with a closed-form SVD"):
        dds2m(None, Plain(), y, noise=GaussianNoise(0.1))
    op = HyperspectralDenoising((6, 16, 16))
    with pytest.raises(TypeError, match="prior must be None"):
        dds2m("prior", op, y, noise=GaussianNoise(0.1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="noise must be an invdiff.operators.GaussianNoise"):
        dds2m(None, op, y, noise=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be <= T=100, got 200"):
        dds2m(None, op, y, noise=GaussianNoise(0.1), steps=200, T=100)
    with pytest.raises(ValueError, match=r"eta_a must be a finite number in \[0.0, 1.0\], got 1.5"):
        dds2m(None, op, y, noise=GaussianNoise(0.1), eta_a=1.5)
    with pytest.raises(ValueError, match=r"start_fraction must be a finite number in \[0.0, 1.0\), got 1.0"):
        dds2m(None, op, y, noise=GaussianNoise(0.1), start_fraction=1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 2, got 1"):
        dds2m(None, op, y, noise=GaussianNoise(0.1), steps=1)
