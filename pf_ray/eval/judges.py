"""Scores of answers: the sets' understanding metrics, and the reward (politeness).

* ``rouge_l``: ROUGE-L F of the answer against the references, the best over them
  (:func:`pf_ray.metrics.rouge.rouge_l`, rouge-score semantics by default); ``score`` is it.
* ``nli``: the paper.md §5 NLI judge. For each unique reference (at most
  ``max_references``), premise = template(answer), hypothesis = template(reference), both
  with the question; the answer is correct (``score`` 1) when the argmax label is
  ``entailment`` for at least one reference. ``nli_logits`` keeps the logits of the
  reference with the highest entailment logit. (The paper gives the judge, not how several
  references combine; "any reference" mirrors VQA's "any annotator's answer".)
* ``sts``: the best cosine of a sentence-transformers model over the references (``score``),
  and ROUGE-L beside it (Table 2 reports both).
* ``answer_match``: synthetic ground truth (:func:`pf_ray.eval.facts.states_fact`): the
  first answer word of the question's kind equals the row's known answer (1/0).
* The reward is the reward scorer's step (:class:`pf_ray.scorers.reward.RewardScore`), the
  PF-1M reward filter's score without its threshold, on (instruction, output).

Models load on the first batch that needs them (once per actor); a missing model fails
the unit (:class:`~pf_ray.faults.ModelUnavailable`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pf_ray.data.schema import Batch
from pf_ray.eval.facts import states_fact
from pf_ray.eval.spec import EvalSpec
from pf_ray.metrics.rouge import Convention, rouge_l
from pf_ray.scorers.classifier import PairClassifier, nli_pair
from pf_ray.scorers.nli import load_nli
from pf_ray.scorers.reward import RewardScore
from pf_ray.scorers.sts import STSModel
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources, StepDef

SCORES = ("score", "rouge_l", "sts", "nli_logits")


def nli_correct(clf: PairClassifier, template: str, labels: Sequence[str],
                rows: list[tuple[str, str, list[str]]]) -> list[tuple[bool, list[float]]]:
    """``(correct, logits)`` per ``(question, answer, references)`` (module doc)."""
    pairs, owner = [], []
    for k, (question, answer, refs) in enumerate(rows):
        for ref in refs:
            pairs.append(nli_pair(template, question, answer, ref, "output"))
            owner.append(k)
    logits = clf.logits([p for p, _ in pairs], [h for _, h in pairs]) if pairs else []
    ent = list(labels).index("entailment")
    per: list[list[list[float]]] = [[] for _ in rows]
    for k, row in zip(owner, logits, strict=True):
        per[k].append(list(row))
    out = []
    for found in per:
        correct = any(max(range(len(r)), key=r.__getitem__) == ent for r in found)
        out.append((correct, max(found, key=lambda r: r[ent]) if found else []))
    return out


class Understanding:
    """The sets' metrics over a micro-batch (each row by its own ``metric``)."""

    name = "understanding"
    inputs = ("id", "task", "instruction", "references", "output", "metric", "meta")
    outputs = SCORES
    resources = Resources(batch_size=64)

    def __init__(self, nli_model: str | None, nli_template: str, nli_labels: Sequence[str],
                 max_references: int = 10, nli_max_length: int = 512,
                 sts_model: str | None = None, rouge: Convention = "rouge_score",
                 device: str = "auto", batch_size: int = 64,
                 storage: StorageConfig | None = None):
        self.nli_model, self.template, self.labels = nli_model, nli_template, list(nli_labels)
        self.max_references, self.nli_max_length = max_references, nli_max_length
        self.sts = STSModel(sts_model, device=device, batch_size=batch_size, storage=storage)
        self.rouge, self.device, self.storage = rouge, device, storage
        self._nli: PairClassifier | None = None

    def nli(self) -> PairClassifier:
        if self._nli is None:
            if self.nli_model is None:
                raise ValueError("a row has metric nli but understanding.nli.model is null")
            self._nli = load_nli(self.nli_model, self.labels, device=self.device,
                                 max_length=self.nli_max_length, storage=self.storage)
        return self._nli

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {c: [None] * n for c in SCORES}
        metric, answers = batch["metric"], batch["output"]
        refs = [list(r or []) for r in batch["references"]]
        for i in range(n):
            if metric[i] in ("rouge_l", "sts"):
                out["rouge_l"][i] = rouge_l(answers[i], refs[i] or [""], self.rouge)
                if metric[i] == "rouge_l":
                    out["score"][i] = out["rouge_l"][i]
            elif metric[i] == "answer_match":
                fact = states_fact(answers[i], batch["task"][i], json.loads(batch["meta"][i]))
                out["score"][i] = None if fact is None else float(fact)
        sts = [i for i in range(n) if metric[i] == "sts" and refs[i]]
        if sts:
            flat = [(i, r) for i in sts for r in refs[i]]
            sims = self.sts.similarities([r for _, r in flat], [answers[i] for i, _ in flat])
            for (i, _), s in zip(flat, sims, strict=True):
                out["sts"][i] = s if out["sts"][i] is None else max(out["sts"][i], s)
            for i in sts:
                out["score"][i] = out["sts"][i]
        judged = [i for i in range(n) if metric[i] == "nli" and refs[i]]
        if judged:
            verdicts = nli_correct(self.nli(), self.template, self.labels, [
                (batch["instruction"][i], answers[i], refs[i][:self.max_references])
                for i in judged])
            for i, (ok, logits) in zip(judged, verdicts, strict=True):
                out["score"][i], out["nli_logits"][i] = float(ok), logits
        return out


def score_steps(spec: EvalSpec) -> list[StepDef]:
    """The reward step (with ``politeness``) and the understanding step (when a set has a
    metric)."""
    steps = []
    if spec.politeness is not None:
        p = spec.politeness
        steps.append(StepDef("reward", RewardScore, RewardScore.inputs, RewardScore.outputs,
                             p.pool.resources(),
                             {"model": p.model, "max_length": p.max_length,
                              "device": p.pool.device, "storage": spec.storage}))
    if any(s.metric != "none" for s in spec.sets):
        u = spec.understanding
        steps.append(StepDef(Understanding.name, Understanding, Understanding.inputs, SCORES,
                             u.pool.resources(),
                             {"nli_model": u.nli.model, "nli_template": u.nli.template,
                              "nli_labels": u.nli.labels,
                              "max_references": u.nli.max_references,
                              "nli_max_length": u.nli.max_length, "sts_model": u.sts_model,
                              "rouge": u.rouge, "device": u.pool.device,
                              "batch_size": u.pool.batch_size, "storage": spec.storage}))
    return steps

