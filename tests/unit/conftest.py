"""Unit-test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Model tests: tiny models run fastest on one thread, and on a busy 2-core machine two
    threads wait on each other (restored afterwards: the setting is process-wide)."""
    if not request.module.__name__.split(".")[-1].startswith("test_model_"):
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
