"""Change filter: outputs the rewriter did not change (paper.md §5.2).

``rouge_score`` is ROUGE-L F (rouge-score's convention, :mod:`pf_ray.metrics.rouge`) of the
output against the original annotation, the same number PF-1M ships. A row is unchanged
when ``rouge_score >= max_rouge``; with the default 1.0 that means its lower-cased
alphanumeric token sequence equals the original's (an exact copy up to case, punctuation
and spacing), since F = 1 only when precision and recall of the LCS are both 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.schema import Batch
from pf_ray.filters.common import applies, drop, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import ChangeFilter
from pf_ray.metrics.rouge import rouge_l
from pf_ray.steps.base import Resources, StepDef


def change_filter(batch: Batch, *, max_rouge: float = 1.0,
                  tasks: Sequence[str] | None = None) -> Batch:
    n = len(batch["id"])
    out = new_out(n, "rouge_score")
    for i in range(n):
        if not applies(batch["task"][i], tasks):
            continue
        score = rouge_l(text(batch["output"][i]), text(batch["original"][i]))
        out["rouge_score"][i] = score
        if score >= max_rouge:
            drop(out, i, "filter_unchanged",
                 f"rouge_score {score:.4f} >= max_rouge {max_rouge} (output copies the original)")
    return out


def _step(c: ChangeFilter, spec: Any) -> StepDef:
    return StepDef("change", change_filter, ("id", "task", "original", "output"),
                   ("rouge_score",), Resources(batch_size=1024),
                   {"max_rouge": c.max_rouge, "tasks": c.tasks})


# rouge_score: ROUGE-L F of output vs original
FILTER = FilterDef("change", ChangeFilter, _step, ("filter_unchanged",),
                   columns=(pa.field("rouge_score", pa.float64()),))
