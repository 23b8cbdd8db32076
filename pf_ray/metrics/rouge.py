"""ROUGE-L of a candidate against one or more references, with an explicit convention.

Two conventions are in use for captioning and rewriting scores, and they differ:

* ``"rouge_score"`` (default): Google's ``rouge-score`` package, the one the Polite
  Flamingo code and most LLM papers use. Lower-cased alphanumeric tokens, F-measure with
  beta = 1; with several references, the best F over them (``RougeScorer.score_multi``).
* ``"coco"``: the COCO caption toolkit (``pycocoevalcap``'s ``Rouge``), used for COCO /
  TextCaps captioning tables. F-measure with beta = 1.2 computed from the *best precision*
  and the *best recall* over the references (each may come from a different reference),
  on lower-cased word tokens. Written here because the toolkit's package needs Java for its
  tokenizer and brings SPICE/METEOR jars; its ROUGE-L is the 20 lines below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

Convention = Literal["rouge_score", "coco"]
COCO_BETA = 1.2
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _coco(candidate: str, references: Sequence[str]) -> float:
    c = _WORD.findall(candidate.lower())
    precisions, recalls = [], []
    for ref in references:
        r = _WORD.findall(ref.lower())
        lcs = _lcs(c, r) if c and r else 0
        precisions.append(lcs / len(c) if c else 0.0)
        recalls.append(lcs / len(r) if r else 0.0)
    p, rec = max(precisions, default=0.0), max(recalls, default=0.0)
    if p == 0 or rec == 0:
        return 0.0
    return (1 + COCO_BETA**2) * p * rec / (rec + COCO_BETA**2 * p)


def rouge_l(candidate: str, references: str | Sequence[str],
            convention: Convention = "rouge_score") -> float:
    """ROUGE-L F in [0, 1] of ``candidate`` against ``references`` (one or several)."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("rouge_l needs at least one reference")
    if convention == "coco":
        return _coco(candidate, refs)
    if convention != "rouge_score":
        raise ValueError(f"convention must be 'rouge_score' or 'coco', received {convention!r}")
    scores = _scorer().score_multi(refs, candidate)
    return float(scores["rougeL"].fmeasure)
