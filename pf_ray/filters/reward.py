"""Reward scores (spec §5 end): a reward model's logit for (instruction, output).

Fed as the OpenAssistant reward model expects, ``tokenizer(question, answer)``; the single
logit is stored as ``reward``. Not a stated PF-1M filter: ``reward.threshold`` (optional)
drops rows below it; a global top-k is a second pass (:mod:`pf_ray.filters.topk`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pf_ray.data.schema import Batch
from pf_ray.filters.classifier import load
from pf_ray.filters.common import LazyModel, applies, drop, new_out, text
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources


class RewardScore(LazyModel):
    name = "reward"
    inputs = ("id", "task", "instruction", "output")
    outputs = ("reward",)
    resources = Resources(batch_size=32)

    def __init__(self, model: str, threshold: float | None = None,
                 tasks: Sequence[str] | None = None, device: str = "auto",
                 max_length: int = 512, storage: StorageConfig | None = None):
        self.model_path, self.threshold, self.tasks = model, threshold, tasks
        self.device, self.max_length, self.storage = device, max_length, storage

    def load(self) -> None:
        self.clf = load("reward", self.model_path, 1, device=self.device,
                        max_length=self.max_length, storage=self.storage)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out = new_out(n, "reward")
        idx = [i for i in range(n) if applies(batch["task"][i], self.tasks)]
        if not idx:
            return out
        self.ensure()
        logits = self.clf.logits([text(batch["instruction"][i]) for i in idx],
                                 [text(batch["output"][i]) for i in idx])
        for i, row in zip(idx, logits, strict=True):
            out["reward"][i] = r = float(row[0])
            if self.threshold is not None and r < self.threshold:
                drop(out, i, "filter_reward", f"reward {r:.4f} < threshold {self.threshold}")
        return out
