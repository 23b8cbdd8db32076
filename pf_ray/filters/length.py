"""Length filter: outputs too short or too long, counted in words (paper.md §5.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.schema import Batch
from pf_ray.filters.common import applies, drop, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import LengthFilter
from pf_ray.steps.base import Resources, StepDef


def word_count(output: str) -> int:
    """Whitespace-separated tokens of ``output``."""
    return len(output.split())


def length_filter(batch: Batch, *, min_words: int, max_words: int,
                  tasks: Sequence[str] | None = None) -> Batch:
    """``length`` per row; drop below ``min_words`` (``filter_length_short``) or above
    ``max_words`` (``filter_length_long``)."""
    n = len(batch["id"])
    out = new_out(n, "length")
    for i in range(n):
        if not applies(batch["task"][i], tasks):
            continue
        words = word_count(text(batch["output"][i]))
        out["length"][i] = words
        if words < min_words:
            drop(out, i, "filter_length_short", f"length {words} words < min_words {min_words}")
        elif words > max_words:
            drop(out, i, "filter_length_long", f"length {words} words > max_words {max_words}")
    return out


def _step(c: LengthFilter, spec: Any) -> StepDef:
    return StepDef("length", length_filter, ("id", "task", "output"), ("length",),
                   Resources(batch_size=4096),
                   {"min_words": c.min_words, "max_words": c.max_words, "tasks": c.tasks})


# length: words of the output (whitespace tokens)
FILTER = FilterDef("length", LengthFilter, _step, ("filter_length_short", "filter_length_long"),
                   columns=(pa.field("length", pa.int64()),))
