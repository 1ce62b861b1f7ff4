"""Prior checkpoints: safetensors + JSON round trip (bit-exact) and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from invdiff.priors import SHIPPED, NetworkPrior, Normalisation, build_unet, load_prior, read_prior_config, save_prior
from invdiff.priors.checkpoint import SHIPPED_DIR
from invdiff.schedule import VPSchedule

CONFIG = {"spatial_dims": 2, "in_channels": 2, "out_channels": 2, "channels": [8, 16],
          "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


def make_prior(config: dict = CONFIG) -> NetworkPrior:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_unet(config)
        for p in net.parameters():  # every tensor non-trivial, so a round trip that drops one is caught
            torch.nn.init.normal_(p, std=0.05)
    return NetworkPrior(net, VPSchedule("cosine", T=500), x_shape=(config["in_channels"], 8, 8),
                        normalisation=Normalisation(0.5, 0.0, "complex / p99"), prediction="v", network_config=config)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[NetworkPrior, Path]:
    prior = make_prior()
    path = save_prior(prior, tmp_path / "ckpt" / "tiny", {"steps": 12, "data": "unit test"})
    return prior, path


def test_save_writes_two_files(saved: tuple[NetworkPrior, Path]) -> None:
    prior, path = saved
    assert path.name == "tiny.safetensors" and path.is_file()
    config = json.loads(path.with_suffix(".json").read_text())
    assert config["network"]["channels"] == [8, 16]
    assert config["schedule"] == {"kind": "cosine", "T": 500, "beta_start": 1e-4, "beta_end": 0.02}
    assert config["normalisation"] == {"scale": 0.5, "offset": 0.0, "description": "complex / p99"}
    assert config["x_shape"] == [2, 8, 8] and config["prediction"] == "v"
    assert config["provenance"] == {"steps": 12, "data": "unit test"}
    # the weights file is plain safetensors holding exactly the state dict
    state = load_file(str(path))
    assert set(state) == set(prior.network.state_dict())
    assert read_prior_config(path)["provenance"]["steps"] == 12


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_load_is_bit_exact(saved: tuple[NetworkPrior, Path], suffix: str) -> None:
    prior, path = saved
    loaded = load_prior(str(path.with_suffix(suffix)))
    for k, v in prior.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[k], v), k
    assert loaded.schedule == prior.schedule and loaded.normalisation == prior.normalisation
    assert loaded.x_shape == prior.x_shape and loaded.prediction == "v"
    x = torch.randn((3, 2, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.5, 100.0, 499.0])
    assert torch.equal(loaded.denoise(x, t), prior.denoise(x, t))


def test_load_with_clip(saved: tuple[NetworkPrior, Path]) -> None:
    prior, path = saved
    loaded = load_prior(path, clip=0.5)
    x = 3 * torch.randn((2, 2, 8, 8), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([400.0, 450.0])
    assert loaded.clip == 0.5
    torch.testing.assert_close(loaded.denoise(x, t), prior.denoise(x, t).clamp(-0.5, 0.5))


def test_load_to_dtype(saved: tuple[NetworkPrior, Path]) -> None:
    loaded = load_prior(saved[1], dtype=torch.float64)
    assert loaded.dtype == torch.float64
    assert loaded.denoise(torch.zeros(1, 2, 8, 8, dtype=torch.float64), torch.ones(1)).dtype == torch.float64


def test_unknown_shipped_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown shipped prior 'knee-mri'; choose from: brain-mri"):
        load_prior("knee-mri")


def test_missing_files(saved: tuple[NetworkPrior, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prior config not found"):
        load_prior(tmp_path / "nothing.json")
    saved[1].unlink()
    with pytest.raises(FileNotFoundError, match="prior weights not found"):
        load_prior(saved[1])


def test_corrupt_json(saved: tuple[NetworkPrior, Path]) -> None:
    saved[1].with_suffix(".json").write_text('{"format": "invdiff-prior", ')
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_prior(saved[1])


def test_not_an_invdiff_config(saved: tuple[NetworkPrior, Path]) -> None:
    saved[1].with_suffix(".json").write_text('{"network": {}}')
    with pytest.raises(ValueError, match="is not an invdiff prior"):
        load_prior(saved[1])


def test_future_format_version(saved: tuple[NetworkPrior, Path]) -> None:
    path = saved[1].with_suffix(".json")
    config = json.loads(path.read_text())
    config["format_version"] = 99
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        load_prior(saved[1])


def test_corrupt_safetensors(saved: tuple[NetworkPrior, Path]) -> None:
    data = saved[1].read_bytes()
    saved[1].write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_prior(saved[1])


def test_weights_that_do_not_fit_the_config(saved: tuple[NetworkPrior, Path]) -> None:
    path = saved[1].with_suffix(".json")
    config = json.loads(path.read_text())
    config["network"]["channels"] = [16, 16]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match the network config: .*wrong shape"):
        load_prior(saved[1])
    config["network"]["channels"] = [8, 16, 16]
    config["network"]["attention_levels"] = [False, False, False]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match the network config: .*missing"):
        load_prior(saved[1])


def test_invalid_network_config_in_json(saved: tuple[NetworkPrior, Path]) -> None:
    path = saved[1].with_suffix(".json")
    config = json.loads(path.read_text())
    config["network"]["dropout"] = 0.1
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"is invalid: network config: unknown key\(s\) \['dropout'\]"):
        load_prior(saved[1])


def test_save_errors(tmp_path: Path) -> None:
    prior = make_prior()
    with pytest.raises(TypeError, match="prior must be a NetworkPrior"):
        save_prior(object(), tmp_path / "x")  # type: ignore[arg-type]
    prior.network_config = None
    with pytest.raises(ValueError, match="network_config is None"):
        save_prior(prior, tmp_path / "x")


def test_save_replaces_atomically(saved: tuple[NetworkPrior, Path]) -> None:
    prior, path = saved
    save_prior(prior, path, {"steps": 13})
    assert read_prior_config(path)["provenance"] == {"steps": 13}
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temp files left
    probe = path.parent.parent / "probe"
    probe.touch()
    assert path.stat().st_mode == probe.stat().st_mode  # a normal new file's permissions, not mkstemp's 0600


@pytest.mark.skipif(not (SHIPPED_DIR / "brain_mri_64.safetensors").is_file(), reason="shipped weights not built yet")
def test_shipped_brain_prior_loads() -> None:
    assert SHIPPED["brain-mri"] == "brain_mri_64"
    prior = load_prior("brain-mri")
    assert prior.x_shape == (1, 64, 64) and prior.prediction == "epsilon"
    assert (prior.normalisation.scale, prior.normalisation.offset) == (2.0, -1.0)
    assert (SHIPPED_DIR / "brain_mri_64.safetensors").stat().st_size <= 30 * 2**20
    x0 = prior.denoise(torch.zeros(2, 1, 64, 64), torch.tensor([999.0, 999.0]))
    assert torch.isfinite(x0).all()
