"""What every filter step shares: task selection, drop bookkeeping, model loading.

A filter step writes its score for the rows it applies to (None elsewhere) and drops rows
by returning ``_reject_reason`` (one of :data:`REASONS`, all intended drops: they never
count towards ``faults.max_reject_fraction``) with a detail naming score and threshold.
Model filters load their model on the first batch, once per actor, so that a missing model
(:class:`~pf_ray.faults.ModelUnavailable`) goes through the step's infrastructure-fault
path: retried, then the unit fails and nothing of it is committed, rejects included.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy

# The reasons of intended drops (a filter's decision, not a fault).
REASONS = ("filter_length_short", "filter_length_long", "filter_unchanged", "filter_sts",
           "filter_clip", "filter_nli_contradiction", "filter_nli_not_entailed", "filter_reward",
           "filter_top_k")


def applies(task: str, tasks: Sequence[str] | None) -> bool:
    return tasks is None or task in tasks


def new_out(n: int, *columns: str) -> Batch:
    """An output batch: the score columns, reject reason and detail, all None."""
    return {c: [None] * n for c in (*columns, REJECT_REASON, REJECT_DETAIL)}


def drop(out: Batch, i: int, reason: str, detail: str) -> None:
    assert reason in REASONS, reason
    out[REJECT_REASON][i], out[REJECT_DETAIL][i] = reason, detail


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
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class LazyModel:
    """A step class whose model loads on the first call (once per actor)."""

    _loaded: bool = False

    def load(self) -> None:  # pragma: no cover - every model filter overrides it
        raise NotImplementedError

    def ensure(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""
