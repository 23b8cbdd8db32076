"""What every filter step shares: task selection and drop bookkeeping.

A filter step writes its score for the rows it applies to (None elsewhere) and drops rows
by returning ``_reject_reason`` (a ``filter_...`` reason of its registration, all intended drops: they never
count towards ``faults.max_reject_fraction``) with a detail naming score and threshold.
Model filters score with :mod:`pf_ray.scorers` (loaded on the first batch, once per actor)
and keep or drop by their thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.steps.base import StepDef


def applies(task: str, tasks: Sequence[str] | None) -> bool:
    return tasks is None or task in tasks


def new_out(n: int, *columns: str) -> Batch:
    """An output batch: the score columns, reject reason and detail, all None."""
    return {c: [None] * n for c in (*columns, REJECT_REASON, REJECT_DETAIL)}


def drop(out: Batch, i: int, reason: str, detail: str) -> None:
    assert reason.startswith("filter_"), reason  # an intended drop (registry.reasons())
    out[REJECT_REASON][i], out[REJECT_DETAIL][i] = reason, detail


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def model_step(cls: type, pool: Any, **kwargs: Any) -> StepDef:
    """A model filter's step in its actor pool (``pool``: the filter's or the spec's)."""
    return StepDef(cls.name, cls, tuple(cls.inputs), tuple(cls.outputs), pool.resources(),
                   {**kwargs, "device": pool.device})
