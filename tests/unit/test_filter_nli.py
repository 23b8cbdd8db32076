"""NLI filter: the paper.md §5 pair, the logits stored, contradiction (argmax) dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_filter_models import build_classifier
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pf_ray.data.schema import REJECT_REASON
from pf_ray.filters.nli import NLIContradiction
from pf_ray.filters.spec import NLIFilter
from pf_ray.scorers.classifier import nli_pair
from pf_ray.scorers.nli import NLI_LABELS

TEMPLATE = NLIFilter().template
BATCH = {"id": ["a", "b", "c"], "task": ["vqa", "multiple_choice", "captions"],
         "instruction": ["What colour is the car?", "Which animal? A. cat B. dog", "x"],
         "original": ["red", "B", "a cat"], "output": ["The car is red.", "It is a dog.", "y"]}


def test_pair_follows_the_spec_template() -> None:
    p, h = nli_pair(TEMPLATE, "What colour is the car?", "The car is red.", "red")
    assert p == '"The car is red." is the answer to the question: "What colour is the car?"'
    assert h == '"red" is the answer to the question: "What colour is the car?"'
    assert nli_pair(TEMPLATE, "q", "out", "orig", premise="original") == (
        '"orig" is the answer to the question: "q"', '"out" is the answer to the question: "q"')


def test_logits_are_the_models_on_that_pair(tmp_path: Path) -> None:
    folder = build_classifier(tmp_path / "nli", 3, seed=1)
    step = NLIContradiction(str(folder), NLI_LABELS, TEMPLATE, tasks=["vqa", "multiple_choice"],
                            device="cpu")
    out = step(BATCH)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    for i in range(2):
        p, h = nli_pair(TEMPLATE, BATCH["instruction"][i], BATCH["output"][i],
                        BATCH["original"][i])
        with torch.no_grad():
            want = model(**tok(p, h, return_tensors="pt")).logits[0].tolist()
        assert out["nli_similarity"][i] == pytest.approx(want, abs=1e-5)
        dropped = max(range(3), key=want.__getitem__) == 0
        assert (out[REJECT_REASON][i] == "filter_nli_contradiction") == dropped
    assert out["nli_similarity"][2] is None and out[REJECT_REASON][2] is None


@pytest.mark.parametrize(("bias", "labels", "dropped"), [
    ([4.0, 0.0, 1.0], NLI_LABELS, True),  # argmax 0 = contradiction
    ([0.0, 4.0, 1.0], NLI_LABELS, False),  # entailment
    ([0.0, 1.0, 4.0], NLI_LABELS, False),  # neutral
    ([0.0, 4.0, 1.0], ("entailment", "contradiction", "neutral"), True),  # label order
])
def test_decision_follows_argmax_and_label_order(tmp_path: Path, bias: list[float],
                                                 labels: tuple[str, ...], dropped: bool) -> None:
    folder = build_classifier(tmp_path / "nli", 3, bias=bias)
    out = NLIContradiction(str(folder), labels, TEMPLATE, tasks=["vqa"], device="cpu")(BATCH)
    assert out["nli_similarity"][0] == pytest.approx(bias)
    assert (out[REJECT_REASON][0] == "filter_nli_contradiction") is dropped
    assert out[REJECT_REASON][1:] == [None, None]


@pytest.mark.parametrize(("bias", "reason"), [
    ([4.0, 0.0, 1.0], "filter_nli_contradiction"),
    ([0.0, 1.0, 4.0], "filter_nli_not_entailed"),  # neutral: no answer stated
    ([0.0, 4.0, 1.0], None),  # entailment: kept
])
def test_not_entailment_drops_neutral_too(tmp_path: Path, bias: list[float],
                                          reason: str | None) -> None:
    folder = build_classifier(tmp_path / "nli", 3, bias=bias)
    out = NLIContradiction(str(folder), NLI_LABELS, TEMPLATE, tasks=["vqa"], device="cpu",
                           drop="not_entailment")(BATCH)
    assert out[REJECT_REASON][0] == reason


def test_not_entailment_needs_an_entailment_label() -> None:
    assert NLIFilter(drop="not_entailment").drop == "not_entailment"
    with pytest.raises(ValueError, match="not_entailment"):
        NLIFilter(drop="not_entailment", labels=["contradiction", "neutral", "other"])
