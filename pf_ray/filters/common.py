"""What every filter step shares: task selection and drop bookkeeping.

A filter step writes its score for the rows it applies to (None elsewhere) and drops rows
by returning ``_reject_reason`` (one of :data:`REASONS`, all intended drops: they never
count towards ``faults.max_reject_fraction``) with a detail naming score and threshold.
Model filters score with :mod:`pf_ray.scorers` (loaded on the first batch, once per actor)
and keep or drop by their thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch

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


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""
