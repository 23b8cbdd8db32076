"""A transformers sequence classifier + tokenizer from a folder or URI, for text pairs.

Shared by the NLI scorer (a cross-encoder such as cross-encoder/nli-deberta-v3-base) and
the reward scorer (OpenAssistant/reward-model-deberta-v3-large-v2), which the filters and
eval's judges use: both score a (first, second) text pair and read the logits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.scorers.loading import model_folder, torch_device
from pf_ray.specs import StorageConfig


class PairClassifier:
    """Loaded once; :meth:`logits` maps N text pairs to an (N, L) list of logits."""

    def __init__(self, what: str, path: str, *, device: str = "auto", max_length: int = 512,
                 storage: StorageConfig | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        local = model_folder(what, path, storage)
        self.device = torch_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(local)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                local, dtype=torch.float32).to(self.device).eval()
        except Exception as exc:  # noqa: BLE001 - a load failure is never a row's fault
            raise ModelUnavailable(f"{what} model {path!r}: {exc}") from exc
        self.max_length = max_length
        self.num_labels = int(self.model.config.num_labels)

    def logits(self, first: list[str], second: list[str]) -> list[list[float]]:
        """The logits of each (first, second) pair, batched; shape [pairs, labels]."""
        import torch

        enc = self.tokenizer(first, second, padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**enc).logits
        return out.float().cpu().tolist()


def nli_pair(template: str, question: str, output: str, original: str,
             premise: str = "output") -> tuple[str, str]:
    """(premise, hypothesis) of the paper.md §5 NLI check.

    Both are ``template`` with ``{question}`` = the instruction; one has the rewrite as
    ``{answer}``, the other the original annotation; ``premise`` says which comes first.
    """
    def fill(answer: str) -> str:  # one pass: an answer holding "{question}" stays as is
        values = {"answer": answer, "question": question}
        return _FIELD.sub(lambda m: values[m.group(1)], template)

    a, b = fill(output), fill(original)
    return (a, b) if premise == "output" else (b, a)


_FIELD = re.compile(r"\{(answer|question)\}")
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def model_labels(clf: PairClassifier) -> list[str] | None:
    """The model's ``config.id2label`` names in index order, lower-cased, or ``None`` when
    they are transformers' placeholders (``LABEL_0``, ...) and say nothing."""
    id2label = getattr(clf.model.config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(clf.num_labels)]
    if not all(names) or any(_GENERIC_LABEL.fullmatch(n) for n in names):
        return None
    return [n.lower() for n in names]


def load(what: str, path: str, num_labels: int, labels: Sequence[str] | None = None,
         **kwargs: Any) -> PairClassifier:
    """A :class:`PairClassifier` whose model has ``num_labels`` outputs, or
    :class:`ModelUnavailable` (a wrong model is an infrastructure fault, not a row's).

    With ``labels`` (the spec's order) and a model whose ``id2label`` holds real names,
    those names, lower-cased and in index order, must equal ``labels`` lower-cased: a
    different order would read the wrong logit as ``contradiction``.
    """
    clf = PairClassifier(what, path, **kwargs)
    if clf.num_labels != num_labels:
        raise ModelUnavailable(f"{what} model {path!r} has {clf.num_labels} output label(s), "
                               f"the spec expects {num_labels}")
    if labels is not None:
        names = model_labels(clf)
        expected = [lab.lower() for lab in labels]
        if names is not None and names != expected:
            raise ModelUnavailable(f"{what} model {path!r} orders its labels {names} "
                                   f"(config.id2label), the spec's labels are {expected}: "
                                   "set the spec's labels to the model's order")
    return clf
