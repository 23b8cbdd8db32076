"""Checkpointed RNG states: Python, numpy and torch are restored exactly (no Ray needed)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pf_ray.train.loop import rng_state, set_rng_state


def draws() -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Numbers from every generator, Gaussian caches included (they are part of the state)."""
    return ([random.random() for _ in range(3)], [random.gauss(0, 1)],
            np.random.rand(3).tolist(), [float(np.random.standard_normal())],
            torch.rand(3).tolist())


def test_restored_state_draws_the_same_numbers() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached Gaussian behind in Python's state
    np.random.standard_normal()  # numpy's legacy Gaussians come in pairs: one is cached
    saved = rng_state()
    first = draws()
    assert draws() != first  # the generators moved on
    set_rng_state(saved)
    assert draws() == first


def test_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(4)
    np.random.seed(5)
    torch.manual_seed(6)
    np.random.standard_normal(3)
    path = tmp_path / "rng_0.pt"
    torch.save(rng_state(), path)
    first = draws()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(torch.load(path, weights_only=True))
    assert draws() == first


def test_cuda_states_are_kept_only_when_cuda_is_there() -> None:
    state = rng_state()
    assert isinstance(state["cuda"], list)
    assert len(state["cuda"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_an_earlier_checkpoint_restores_torch_only() -> None:
    torch.manual_seed(7)
    old = {"cpu": torch.get_rng_state(), "numpy_seed": torch.tensor(0)}
    first = torch.rand(3).tolist()
    set_rng_state(old)
    assert torch.rand(3).tolist() == first
