"""``kind: eval`` specs: field errors name the field, what was received and what is allowed;
the shipped eval jobs hold the paper's sets and sample sizes (paper.md §7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import SpecError, load_spec, parse_spec
from pf_ray.eval.plan import eval_hash
from pf_ray.eval.spec import EvalSpec

JOBS = Path(__file__).resolve().parents[2] / "jobs"
BASE: dict[str, Any] = {"kind": "eval", "output": {"path": "out"},
                        "sets": [{"name": "COCO", "path": "data/coco", "metric": "rouge_l"}],
                        "sources": [{"kind": "dataset", "name": "raw"}]}


def errors(**changes: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, **changes})
    return str(info.value)


def test_a_minimal_spec_and_its_defaults() -> None:
    spec = parse_spec(BASE)
    assert isinstance(spec, EvalSpec)
    assert spec.decoding.do_sample is False and spec.politeness is None
    assert spec.understanding.nli.labels == ["contradiction", "entailment", "neutral"]
    assert spec.understanding.nli.template == \
        '"{answer}" is the answer to the question: "{question}"'


def test_field_errors() -> None:
    msg = errors(sources=[{"kind": "dataset", "name": "raw"}, {"kind": "dataset",
                                                               "name": "raw"}])
    assert "sources: names must be unique" in msg and "raw" in msg
    msg = errors(sets=[{"name": "OK-VQA", "path": "p", "metric": "nli"}])
    assert "understanding.nli.model: required" in msg and "OK-VQA" in msg
    msg = errors(sets=[{"name": "a b", "path": "p"}], politeness={"model": "rm"})
    assert "sets.0.name" in msg and "'a b'" in msg
    msg = errors(sets=[{"name": "S", "path": "p", "metric": "bleu"}])
    assert "sets.0.metric" in msg and "rouge_l" in msg and "bleu" in msg
    msg = errors(sources=[{"kind": "dataset", "name": "pf", "column": "output"}])
    assert "column" in msg and "path null" in msg
    msg = errors(sources=[{"kind": "http", "name": "x", "base_url": "localhost:8000",
                           "model": "m"}])
    assert "base_url" in msg and "http://" in msg
    msg = errors(sources=[{"kind": "robot", "name": "x"}])
    assert "sources.0" in msg and "robot" in msg
    msg = errors(baseline="gpt")
    assert "baseline" in msg and "'gpt'" in msg and "raw" in msg
    msg = errors(sets=[{"name": "S", "path": "p"}])
    assert "politeness" in msg and "nothing would be scored" in msg
    msg = errors(sets=[{"name": "S", "path": "p", "samples": 0}])
    assert "sets.0.samples" in msg
    msg = errors(sources=[{"kind": "http", "name": "x", "base_url": "http://h/v1",
                           "model": "m"}], decoding={"num_beams": 3})
    assert "decoding.num_beams" in msg and "http" in msg


def test_where_it_runs_is_not_in_the_shard_names() -> None:
    src = {"kind": "model", "name": "m", "model": "s3://b/m"}
    a = parse_spec({**BASE, "sources": [src]})
    b = parse_spec({**BASE, "sources": [{**src, "num_gpus": 1, "max_actors": 8,
                                         "batch_size": 64}],
                    "understanding": {"pool": {"num_gpus": 0.5}}})
    c = parse_spec({**BASE, "sources": [{**src, "model": "s3://b/other"}]})
    assert eval_hash(a) == eval_hash(b) != eval_hash(c)


def test_shipped_politeness_job_is_the_papers_52k_set() -> None:
    spec = load_spec(JOBS / "eval_politeness.yaml", env={"PF_BUCKET": "s3://bucket"})
    assert len(spec.sets) == 15
    assert sum(s.samples for s in spec.sets) == 52_000
    assert all(s.path.startswith("s3://bucket/eval/") for s in spec.sets)
    assert spec.politeness is not None and spec.politeness.tie_margin == 0.0
    kinds = {s.kind for s in spec.sources}
    assert kinds == {"dataset", "model", "http"} and spec.baseline == "raw"


def test_shipped_understanding_job_has_table_1_and_2_sets_and_sizes() -> None:
    spec = load_spec(JOBS / "eval_understanding.yaml", env={"PF_BUCKET": "s3://bucket"})
    got = {s.name: (s.metric, s.samples) for s in spec.sets}
    assert got == {"COCO": ("rouge_l", 5000), "TextCaps": ("rouge_l", 3000),
                   "Img2P": ("rouge_l", 3000), "OK-VQA": ("nli", 3000), "VSR": ("nli", None),
                   "Grid3D": ("nli", 3000), "Spot-the-Diff": ("sts", None),
                   "Image-Editing": ("sts", None), "NLVR2": ("sts", 3000)}
    assert spec.understanding.nli.model and spec.understanding.nli.model.startswith("s3://")
