"""The NLI model's own label names must agree with the spec's label order, and the pair
template is filled in one pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_filter_models import build_classifier

from pf_ray.faults import ModelUnavailable
from pf_ray.filters.nli import NLIContradiction
from pf_ray.filters.spec import NLIFilter
from pf_ray.scorers.classifier import nli_pair
from pf_ray.scorers.nli import NLI_LABELS

TEMPLATE = NLIFilter().template
BATCH = {"id": ["a"], "task": ["vqa"], "instruction": ["What colour?"], "original": ["red"],
         "output": ["It is red."]}


def _named(folder: Path, names: list[str]) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): n for i, n in enumerate(names)}
    config["label2id"] = {n: i for i, n in enumerate(names)}
    path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classifier(tmp_path_factory.mktemp("nli") / "m", 3, bias=[0.0, 4.0, 1.0])


def test_placeholder_names_say_nothing(model_dir: Path) -> None:
    out = NLIContradiction(str(model_dir), NLI_LABELS, TEMPLATE, device="cpu")(BATCH)
    assert out["nli_similarity"][0] == pytest.approx([0.0, 4.0, 1.0])


def test_matching_names_load_in_any_case(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = _named(Path(shutil.copytree(model_dir, tmp_path / "m")),
                    ["CONTRADICTION", "Entailment", "neutral"])
    out = NLIContradiction(str(folder), NLI_LABELS, TEMPLATE, device="cpu")(BATCH)
    assert out["nli_similarity"][0] == pytest.approx([0.0, 4.0, 1.0])


def test_other_order_is_a_model_fault(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = _named(Path(shutil.copytree(model_dir, tmp_path / "m")),
                    ["entailment", "contradiction", "neutral"])
    with pytest.raises(ModelUnavailable) as info:
        NLIContradiction(str(folder), NLI_LABELS, TEMPLATE, device="cpu")(BATCH)
    text = str(info.value)
    assert "['entailment', 'contradiction', 'neutral']" in text
    assert "['contradiction', 'entailment', 'neutral']" in text


def test_template_fields_are_filled_once() -> None:
    p, h = nli_pair(TEMPLATE, "Q {answer}?", "say {question}", "orig")
    assert p == '"say {question}" is the answer to the question: "Q {answer}?"'
    assert h == '"orig" is the answer to the question: "Q {answer}?"'
