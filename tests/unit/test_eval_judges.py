"""The understanding metrics on hand-made answers: ROUGE-L over several references, the
NLI judge (paper.md §5 template and label order; the cross-encoder stubbed), STS, and the
synthetic ground truth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pf_ray.eval.judges import Understanding
from pf_ray.metrics.rouge import rouge_l
from pf_ray.scorers import nli as scorers_nli
from pf_ray.scorers.nli import NLI_LABELS

TEMPLATE = '"{answer}" is the answer to the question: "{question}"'


class StubNLI:
    """Entailment when the premise's answer equals the hypothesis's, else contradiction;
    logits in the paper.md §5 order [contradiction, entailment, neutral]."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def logits(self, first: list[str], second: list[str]) -> list[list[float]]:
        self.pairs += list(zip(first, second, strict=True))
        answer = lambda s: s.split('" is the answer', 1)[0].strip('"').lower()  # noqa: E731
        return [[0.1, 2.0, 0.3] if answer(p) == answer(h) else [3.0, -1.0, 0.0]
                for p, h in zip(first, second, strict=True)]


def batch(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    cols = ("id", "task", "instruction", "references", "output", "metric", "meta")
    return {c: [r.get(c, "{}" if c == "meta" else None) for r in rows] for c in cols}


def test_rouge_l_is_the_best_over_references() -> None:
    step = Understanding(None, TEMPLATE, NLI_LABELS)
    refs = ["a dog runs on the grass", "two cats sleep on a red sofa"]
    rows = [{"id": "1", "task": "captions", "metric": "rouge_l", "references": refs,
             "output": "two cats sleep on a red sofa"},
            {"id": "2", "task": "captions", "metric": "rouge_l", "references": refs,
             "output": "a dog sleeps"},
            {"id": "3", "task": "captions", "metric": "rouge_l", "references": refs,
             "output": "nothing alike"}]
    out = step(batch(rows))
    assert out["score"][0] == 1.0
    # "a dog sleeps" vs "a dog runs on the grass": LCS 2, P 2/3, R 2/6 -> F = 4/9
    assert out["score"][1] == pytest.approx(4 / 9)
    assert out["score"][1] == rouge_l("a dog sleeps", refs)
    assert out["score"][2] == 0.0
    assert out["sts"] == [None] * 3 and out["nli_logits"] == [None] * 3


def test_nli_judge_accuracy_with_the_spec_template(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubNLI()
    loaded: dict[str, Any] = {}

    def fake_load(what: str, path: str, num_labels: int, labels: Any = None,
                  **kw: Any) -> StubNLI:
        loaded.update(what=what, path=path, num_labels=num_labels, labels=labels)
        return stub

    monkeypatch.setattr(scorers_nli, "load", fake_load)
    step = Understanding("/models/nli", TEMPLATE, NLI_LABELS)
    q = "What colour is the bus?"
    rows = [{"id": "1", "task": "vqa", "metric": "nli", "instruction": q,
             "references": ["red", "crimson"], "output": "Crimson"},  # 2nd reference
            {"id": "2", "task": "vqa", "metric": "nli", "instruction": q,
             "references": ["red"], "output": "blue"},
            {"id": "3", "task": "vqa", "metric": "nli", "instruction": q,
             "references": ["red"], "output": "red"},
            {"id": "4", "task": "vqa", "metric": "nli", "instruction": q,
             "references": ["red", "red bus", "scarlet"], "output": "green"}]
    out = step(batch(rows))
    assert out["score"] == [1.0, 0.0, 1.0, 0.0]  # accuracy 2 / 4
    assert loaded == {"what": "nli", "path": "/models/nli", "num_labels": 3,
                      "labels": list(NLI_LABELS)}
    # premise: the answer in the template; hypothesis: a reference in the template
    assert stub.pairs[0] == ('"Crimson" is the answer to the question: "What colour is the '
                             'bus?"', '"red" is the answer to the question: "What colour is '
                             'the bus?"')
    assert len(stub.pairs) == 2 + 1 + 1 + 3
    assert out["nli_logits"][0] == [0.1, 2.0, 0.3]  # the entailed reference's logits
    assert out["nli_logits"][1] == [3.0, -1.0, 0.0]


def test_nli_label_order_is_read_from_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """With labels [entailment, neutral, contradiction] the same logits mean otherwise."""
    monkeypatch.setattr(scorers_nli, "load", lambda *a, **k: StubNLI())
    step = Understanding("/m", TEMPLATE, ["entailment", "neutral", "contradiction"])
    out = step(batch([{"id": "1", "task": "vqa", "metric": "nli", "instruction": "q",
                       "references": ["x"], "output": "y"}]))  # argmax index 0
    assert out["score"] == [1.0]


def test_sts_is_the_best_cosine_over_references_with_rouge_beside() -> None:
    step = Understanding(None, TEMPLATE, NLI_LABELS)  # the packaged all-MiniLM-L6-v2
    rows = [{"id": "1", "task": "change_captioning", "metric": "sts",
             "references": ["a car has moved", "the parked car is gone"],
             "output": "the parked car is gone"},
            {"id": "2", "task": "change_captioning", "metric": "sts",
             "references": ["a car has moved"], "output": "quarterly tax statements"}]
    out = step(batch(rows))
    assert out["sts"][0] == pytest.approx(1.0, abs=1e-5) and out["score"][0] == out["sts"][0]
    assert out["sts"][1] < 0.5
    assert out["rouge_l"][0] == 1.0 and out["rouge_l"][1] == 0.0


def test_answer_match_reads_the_synthetic_ground_truth() -> None:
    step = Understanding(None, TEMPLATE, NLI_LABELS)
    meta = json.dumps({"question_type": "color", "answer": "red"})
    rows = [{"id": "1", "task": "vqa", "metric": "answer_match", "meta": meta,
             "output": "The circle is red."},
            {"id": "2", "task": "vqa", "metric": "answer_match", "meta": meta,
             "output": "It is blue, not red."},  # the first colour named counts
            {"id": "3", "task": "captions", "metric": "answer_match", "meta": "{}",
             "output": "a red circle"}]  # nothing checkable
    assert step(batch(rows))["score"] == [1.0, 0.0, None]
