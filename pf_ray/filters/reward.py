"""Reward filter (paper.md §5 end): the reward scorer's logit for (instruction, output).

Not a stated PF-1M filter: the score is stored as ``reward``; ``reward.threshold``
(optional) drops rows below it; a global top-k is a second pass
(:mod:`pf_ray.filters.topk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.schema import Batch
from pf_ray.filters.common import drop, model_step
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import RewardFilter
from pf_ray.scorers.reward import RewardScore as _RewardScorer
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import StepDef


class RewardScore(_RewardScorer):
    """The reward scorer, then ``threshold`` (None: keep every row)."""

    def __init__(self, model: str, threshold: float | None = None,
                 tasks: Sequence[str] | None = None, device: str = "auto",
                 max_length: int = 512, storage: StorageConfig | None = None):
        super().__init__(model, tasks=tasks, device=device, max_length=max_length,
                         storage=storage)
        self.threshold = threshold

    def __call__(self, batch: Batch) -> Batch:
        out = super().__call__(batch)
        if self.threshold is not None:
            for i, r in enumerate(out["reward"]):
                if r is not None and r < self.threshold:
                    drop(out, i, "filter_reward", f"reward {r:.4f} < threshold {self.threshold}")
        return out


def _step(c: RewardFilter, spec: Any) -> StepDef:
    return model_step(RewardScore, c.pool or spec.pool, model=c.model, threshold=c.threshold,
                      tasks=c.tasks, max_length=c.max_length, storage=spec.storage)


# reward: the reward model's logit for (instruction, output)
FILTER = FilterDef("reward", RewardFilter, _step, ("filter_reward",), required=("model",),
                   columns=(pa.field("reward", pa.float64()),))
