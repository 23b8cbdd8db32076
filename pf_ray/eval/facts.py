"""Fact recall: does a rewrite still state the ground-truth answer of its raw annotation?

The paper's failure modes of rewriting include *changed answers* (paper.md §4). On the synthetic
data the ground truth is known, so each rewritten VQA, classification and multiple-choice
row can be checked: the first answer word of the question's kind in the text (the first
colour, shape, number, yes/no; see :func:`pf_ray.eval.vqa.read_answer`) must be the
ground truth. Rows with nothing checkable (captions, boxes, other sources) are left out.
"""

from __future__ import annotations

import json
from typing import Any

from pf_ray.eval.vqa import VOCABULARY, read_answer


def expected_answer(task: str, meta: dict[str, Any]) -> tuple[str, str] | None:
    """``(answer kind, canonical answer)`` a text about this row should state, if known."""
    if task == "vqa" and meta.get("question_type") in VOCABULARY and "answer" in meta:
        return meta["question_type"], str(meta["answer"])
    if task == "classification" and "answer" in meta:
        return "shape", str(meta["answer"])
    if task == "multiple_choice" and meta.get("choices") and meta.get("answer") in ("A", "B",
                                                                                    "C", "D"):
        return "color", str(meta["choices"]["ABCD".index(meta["answer"])])
    return None


def states_fact(text: str, task: str, meta: dict[str, Any]) -> bool | None:
    """True/False when the row has a checkable answer, else None."""
    expected = expected_answer(task, meta)
    if expected is None:
        return None
    kind, answer = expected
    return read_answer(text, kind) == answer


def fact_recall(rows: list[dict[str, Any]], column: str = "output") -> tuple[float | None, int]:
    """Share of checkable rows whose ``column`` states the fact, and how many were checkable."""
    checks = [states_fact(r[column], r["task"], json.loads(r["meta"])) for r in rows]
    known = [c for c in checks if c is not None]
    return (sum(known) / len(known) if known else None), len(known)
