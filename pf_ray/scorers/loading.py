"""How scorer models are found and loaded: a local copy of a folder or URI, a device, once.

A scorer loads its model on the first batch, once per actor, so that a missing model
(:class:`~pf_ray.faults.ModelUnavailable`) goes through the step's infrastructure-fault
path: retried, then the unit fails and nothing of it is committed, rejects included.
"""

from __future__ import annotations

import os

from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy


def model_folder(what: str, path: str, storage: StorageConfig | None) -> str:
    """A local copy of a model folder or file, or :class:`ModelUnavailable`."""
    try:
        local = local_copy(path, storage)
    except (FileNotFoundError, OSError) as exc:
        raise ModelUnavailable(f"{what} model {path!r}: {exc}") from exc
    if not os.path.exists(local):
        raise ModelUnavailable(f"{what} model {path!r}: no such folder or file")
    return local


def torch_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; others as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LazyModel:
    """A scorer (or step) whose model loads on the first call (once per actor)."""

    _loaded: bool = False

    def load(self) -> None:  # pragma: no cover - every scorer overrides it
        raise NotImplementedError

    def ensure(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True
