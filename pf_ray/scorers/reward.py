"""Reward: a reward model's logit for (question, answer), as a step that only scores.

Fed as the OpenAssistant reward model expects, ``tokenizer(question, answer)``; the single
logit is stored as ``reward`` for the rows of the selected tasks (None elsewhere). Eval
scores politeness with it; the PF-1M reward filter is this step plus a threshold
(:mod:`pf_ray.filters.reward`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.scorers.classifier import load
from pf_ray.scorers.loading import LazyModel
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


class RewardScore(LazyModel):
    """The ``reward`` column: a reward model's score of (instruction, output); scores only,
    the filter keeps or drops."""
    name = "reward"
    inputs = ("id", "task", "instruction", "output")
    outputs = ("reward",)
    resources = Resources(batch_size=32)

    def __init__(self, model: str, tasks: Sequence[str] | None = None, device: str = "auto",
                 max_length: int = 512, storage: StorageConfig | None = None):
        self.model_path, self.tasks = model, tasks
        self.device, self.max_length, self.storage = device, max_length, storage

    def load(self) -> None:
        """Load the reward model (once per actor)."""
        self.clf = load("reward", self.model_path, 1, device=self.device,
                        max_length=self.max_length, storage=self.storage)

    def rewards(self, questions: list[str], answers: list[str]) -> list[float]:
        """One score per (question, answer) pair: the model's single logit."""
        self.ensure()
        return [float(row[0]) for row in self.clf.logits(questions, answers)]

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {c: [None] * n for c in ("reward", REJECT_REASON, REJECT_DETAIL)}
        idx = [i for i in range(n) if self.tasks is None or batch["task"][i] in self.tasks]
        if idx:
            scores = self.rewards([_text(batch["instruction"][i]) for i in idx],
                                  [_text(batch["output"][i]) for i in idx])
            for i, r in zip(idx, scores, strict=True):
                out["reward"][i] = r
        return out
