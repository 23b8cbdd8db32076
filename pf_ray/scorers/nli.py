"""NLI: a cross-encoder's logits for (premise, hypothesis) pairs, in the spec's label order.

The PF-1M NLI filter and eval's NLI judge both build the paper.md §5 pair
(:func:`~pf_ray.scorers.classifier.nli_pair`) and read the argmax label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.scorers.classifier import PairClassifier, load

# cross-encoder/nli-deberta-v3's order (logit index -> label), the specs' default.
NLI_LABELS = ("contradiction", "entailment", "neutral")


def load_nli(path: str, labels: Sequence[str], **kwargs: Any) -> PairClassifier:
    """The cross-encoder at ``path``; its ``id2label`` must agree with ``labels``."""
    return load("nli", path, len(labels), labels=labels, **kwargs)


def argmax_label(logits: Sequence[float], labels: Sequence[str]) -> str:
    """The label of the largest logit."""
    return labels[max(range(len(logits)), key=logits.__getitem__)]
