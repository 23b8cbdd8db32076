"""Reward filter: the logit of (instruction, output) from a tiny classifier, optional cut."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_filter_models import build_classifier
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pf_ray.data.schema import REJECT_REASON
from pf_ray.faults import ModelUnavailable
from pf_ray.filters.reward import RewardScore

BATCH = {"id": ["a", "b"], "task": ["vqa", "captions"],
         "instruction": ["What colour is the car?", "Describe the image."],
         "output": ["The car is red.", "A red car parked on a street."]}


def test_reward_is_the_pair_logit(tmp_path: Path) -> None:
    folder = build_classifier(tmp_path / "rm", 1, seed=3)
    out = RewardScore(str(folder), device="cpu")(BATCH)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    for i in range(2):  # hand forward: tokenizer(question, answer), logit 0
        enc = tok(BATCH["instruction"][i], BATCH["output"][i], return_tensors="pt")
        with torch.no_grad():
            want = float(model(**enc).logits[0, 0])
        assert out["reward"][i] == pytest.approx(want, abs=1e-5)
    assert out[REJECT_REASON] == [None, None]


def test_threshold_and_wrong_models(tmp_path: Path) -> None:
    folder = build_classifier(tmp_path / "rm", 1, bias=[-2.5])
    out = RewardScore(str(folder), threshold=-1.0, tasks=["vqa"], device="cpu")(BATCH)
    assert out["reward"] == [pytest.approx(-2.5), None]
    assert out[REJECT_REASON] == ["filter_reward", None]
    with pytest.raises(ModelUnavailable, match="3 output label.*expects 1"):
        RewardScore(str(build_classifier(tmp_path / "nli", 3)), device="cpu")(BATCH)
    with pytest.raises(ModelUnavailable, match="no such folder"):
        RewardScore(str(tmp_path / "absent"))(BATCH)
