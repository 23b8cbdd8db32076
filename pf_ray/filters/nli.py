"""NLI filter (QA, paper.md §5.4): drop rewrites an NLI cross-encoder says contradict the
original answer.

The pair fed to the model is exactly (paper.md §5, in its order)::

    premise    = '"{output}" is the answer to the question: "{instruction}"'
    hypothesis = '"{original}" is the answer to the question: "{instruction}"'

(``nli.premise: original`` swaps them). ``nli_similarity`` stores the model's 3 logits in
its own label order, [contradiction, entailment, neutral] for cross-encoder/nli-deberta-v3
(``nli.labels``); the row is dropped when the argmax is ``contradiction`` (the paper), and
with ``nli.drop: not_entailment`` also when it is anything but ``entailment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.schema import Batch
from pf_ray.filters.common import applies, drop, model_step, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import NLIFilter
from pf_ray.scorers.classifier import nli_pair
from pf_ray.scorers.loading import LazyModel
from pf_ray.scorers.nli import argmax_label, load_nli
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources, StepDef


class NLIContradiction(LazyModel):
    name = "nli"
    inputs = ("id", "task", "instruction", "original", "output")
    outputs = ("nli_similarity",)
    resources = Resources(batch_size=64)

    def __init__(self, model: str, labels: Sequence[str], template: str,
                 premise: str = "output", tasks: Sequence[str] | None = None,
                 drop: str = "contradiction",
                 device: str = "auto", max_length: int = 512,
                 storage: StorageConfig | None = None):
        self.model_path, self.labels, self.template = model, list(labels), template
        self.premise, self.tasks, self.drop = premise, tasks, drop
        self.device, self.max_length, self.storage = device, max_length, storage

    def load(self) -> None:
        self.clf = load_nli(self.model_path, self.labels, device=self.device,
                            max_length=self.max_length, storage=self.storage)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out = new_out(n, "nli_similarity")
        idx = [i for i in range(n) if applies(batch["task"][i], self.tasks)]
        if not idx:
            return out
        self.ensure()
        pairs = [nli_pair(self.template, text(batch["instruction"][i]), text(batch["output"][i]),
                          text(batch["original"][i]), self.premise) for i in idx]
        logits = self.clf.logits([p for p, _ in pairs], [h for _, h in pairs])
        for i, row in zip(idx, logits, strict=True):
            out["nli_similarity"][i] = row
            best = argmax_label(row, self.labels)
            scores = ", ".join(f"{lab} {v:.3f}" for lab, v in zip(self.labels, row, strict=True))
            if best == "contradiction":
                drop(out, i, "filter_nli_contradiction", f"NLI argmax is contradiction: {scores}")
            elif self.drop == "not_entailment" and best != "entailment":
                drop(out, i, "filter_nli_not_entailed", f"NLI argmax is {best}: {scores}")
        return out


def _step(c: NLIFilter, spec: Any) -> StepDef:
    return model_step(NLIContradiction, c.pool or spec.pool, model=c.model, labels=c.labels,
                      template=c.template, premise=c.premise, drop=c.drop, tasks=c.tasks,
                      max_length=c.max_length, storage=spec.storage)


# nli_similarity: the cross-encoder's logits in nli.labels order (QA tasks)
FILTER = FilterDef("nli", NLIFilter, _step,
                   ("filter_nli_contradiction", "filter_nli_not_entailed"), required=("model",),
                   columns=(pa.field("nli_similarity", pa.list_(pa.float64())),))
