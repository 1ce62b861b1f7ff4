from __future__ import annotations

import pytest
import torch

DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES, ids=str)
def device(request: pytest.FixtureRequest) -> torch.device:
    return request.param


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def global_rng_guard():
    """No code under test may draw from (or reseed) the global RNG: randomness comes from generators."""
    state = torch.random.get_rng_state()
    yield
    assert torch.equal(state, torch.random.get_rng_state()), "the global torch RNG was used; pass a torch.Generator"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many tiny convolutions (DDS2M): on the shared 2-core machine a second intra-op thread made them up to ~10x
    slower. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
