"""STS filter (captions, paper.md §5.3): the STS scorer's cosine(original, output)
(:class:`pf_ray.scorers.sts.STSModel`); rows below the threshold (0.40) are dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.schema import Batch
from pf_ray.filters.common import applies, drop, model_step, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import STSFilter
from pf_ray.scorers.loading import LazyModel
from pf_ray.scorers.sts import STSModel
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources, StepDef


class STSScore(LazyModel):
    name = "sts"
    inputs = ("id", "task", "original", "output")
    outputs = ("sts_similarity",)
    resources = Resources(batch_size=64)

    def __init__(self, model: str | None, threshold: float = 0.40,
                 tasks: Sequence[str] | None = None, device: str = "auto",
                 batch_size: int = 64, storage: StorageConfig | None = None):
        self.model_path, self.threshold, self.tasks = model, threshold, tasks
        self.device, self.batch_size, self.storage = device, batch_size, storage
        self.scorer = STSModel(model, device=device, batch_size=batch_size, storage=storage)

    def load(self) -> None:
        self.scorer.ensure()

    def similarities(self, originals: list[str], outputs: list[str]) -> list[float]:
        return self.scorer.similarities(originals, outputs)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out = new_out(n, "sts_similarity")
        idx = [i for i in range(n) if applies(batch["task"][i], self.tasks)]
        if not idx:
            return out
        sims = self.similarities([text(batch["original"][i]) for i in idx],
                                 [text(batch["output"][i]) for i in idx])
        for i, s in zip(idx, sims, strict=True):
            out["sts_similarity"][i] = s
            if s < self.threshold:
                drop(out, i, "filter_sts", f"sts_similarity {s:.4f} < {self.threshold}")
        return out


def _step(c: STSFilter, spec: Any) -> StepDef:
    pool = c.pool or spec.pool
    return model_step(STSScore, pool, model=c.model, threshold=c.threshold, tasks=c.tasks,
                      batch_size=pool.batch_size, storage=spec.storage)


# sts_similarity: cosine(original, output) (captions)
FILTER = FilterDef("sts", STSFilter, _step, ("filter_sts",),
                   columns=(pa.field("sts_similarity", pa.float64()),))
