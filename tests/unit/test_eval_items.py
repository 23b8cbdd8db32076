"""Eval items from pf-ray sample datasets: question and references, the seeded sample, one
row per (item, source), dataset answers joined by id (a missing one is a reject)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_REASON, REJECT_SCHEMA, REWRITE_SCHEMA, to_table
from pf_ray.eval.items import item_of, plan_units, read_items, references_of
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig


def test_references_in_order_of_preference() -> None:
    assert references_of({"captions": ["a cat", "", "a cat", "a grey cat"]}, "raw") == \
        ["a cat", "a grey cat"]
    assert references_of({"answers": ["red"] * 7 + ["dark red"] * 3, "answer": "red"},
                         "red") == ["red", "dark red"]
    assert references_of({"answer": "B"}, "The answer is B.") == ["B"]
    assert references_of({"paragraph": "A long paragraph."}, "x") == ["A long paragraph."]
    assert references_of({}, "the raw annotation") == ["the raw annotation"]


def test_item_of_a_sample_row() -> None:
    row = {"conversations": [{"role": "user", "content": "<image>\nWhat colour?"},
                             {"role": "assistant", "content": "red"}],
           "meta": json.dumps({"answers": ["red", "crimson"]})}
    assert item_of(row) == ("What colour?", "red", ["red", "crimson"])
    assert item_of({"conversations": [{"role": "assistant", "content": "x"}],
                    "meta": "{}"})[0] == "no_instruction"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("items") / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 90, "rows_per_shard": 45,
                        "output": {"path": root}, "ray": {"progress": False}}),
            executor="local")
    return root


def rewrites(root: Path, answers: dict[str, str]) -> str:
    """A rewrite dataset holding ``output`` for some ids (as the rewrite job writes it)."""
    ds = Dataset(str(root), StorageConfig())
    rows = to_table({"id": list(answers), "source": ["s"] * len(answers),
                     "task": ["vqa"] * len(answers), "image": [None] * len(answers),
                     "image_bytes": [None] * len(answers),
                     "instruction": ["q"] * len(answers), "original": ["o"] * len(answers),
                     "output": list(answers.values()), "finish_reason": ["eos"] * len(answers),
                     "meta": ["{}"] * len(answers)}, REWRITE_SCHEMA)
    ds.write_data("u-0.parquet", rows, REJECT_SCHEMA.empty_table())
    ds.commit("u-0", {"unit": "u", "rows": len(answers), "rejects": 0, "counts": {},
                      "rejects_per_reason": {}, "files": ["u-0.parquet"]})
    return str(root)


def test_units_sample_and_rows_per_source(synthetic: str, tmp_path: Path) -> None:
    vqa_ids = [r["id"] for r in Dataset(synthetic, StorageConfig()).read(
        columns=["id", "task"]).to_pylist() if r["task"] == "vqa"]
    pf = rewrites(tmp_path / "pf", {i: f"rewrite of {i}" for i in vqa_ids[:4]})
    spec = parse_spec({"kind": "eval", "output": {"path": str(tmp_path / "out")},
                       "sets": [{"name": "V", "path": synthetic, "tasks": ["vqa"],
                                 "samples": 6, "metric": "answer_match"}],
                       "sources": [{"kind": "dataset", "name": "raw"},
                                   {"kind": "dataset", "name": "pf", "path": pf,
                                    "column": "output"},
                                   {"kind": "model", "name": "m", "model": "/m"}]})
    units, report = plan_units(spec)
    assert len(units) == 2 and report == {"V": {"eligible": len(vqa_ids), "taken": 6}}
    rows: dict[str, list] = {}
    for u in units:
        for k, v in read_items(**u.params).items():
            rows.setdefault(k, []).extend(v)
    items = sorted(set(rows["item"]))
    assert len(items) == 6 and set(items) <= set(vqa_ids)
    assert len(rows["id"]) == 18 and len(set(rows["id"])) == 18
    by = {(i, a): k for k, (i, a) in enumerate(zip(rows["item"], rows["answerer"],
                                                   strict=True))}
    for item in items:
        raw, pfk, model = by[(item, "raw")], by[(item, "pf")], by[(item, "m")]
        assert rows["output"][raw] == rows["original"][raw] != ""
        assert rows["output"][model] is None and rows[REJECT_REASON][model] is None
        if item in vqa_ids[:4]:
            assert rows["output"][pfk] == f"rewrite of {item}"
        else:
            assert rows[REJECT_REASON][pfk] == "no_answer"
        assert rows["instruction"][raw] == rows["instruction"][model]
    # the same sample on every run
    again = plan_units(spec)[0]
    assert [u.params["threshold"] for u in again] == [u.params["threshold"] for u in units]
    # a file holding none of the sampled items is no unit (it would never commit)
    one = parse_spec({**spec.model_dump(mode="json"),
                      "sets": [{"name": "V", "path": synthetic, "tasks": ["vqa"],
                                "samples": 1, "metric": "answer_match"}]})
    assert len(plan_units(one)[0]) == 1


def test_stored_answers_that_are_not_there_fail_the_plan(synthetic: str, tmp_path: Path) -> None:
    spec = parse_spec({"kind": "eval", "output": {"path": str(tmp_path / "out")},
                       "sets": [{"name": "V", "path": synthetic, "tasks": ["vqa"],
                                 "metric": "answer_match"}],
                       "sources": [{"kind": "dataset", "name": "raw"},
                                   {"kind": "dataset", "name": "pf",
                                    "path": str(tmp_path / "never_written"),
                                    "column": "output"}]})
    with pytest.raises(FileNotFoundError, match=r"sources.1 \(pf\): .*never_written holds no"):
        plan_units(spec)


def test_two_sets_on_the_same_rows_give_distinct_ids(synthetic: str, tmp_path: Path) -> None:
    spec = parse_spec({"kind": "eval", "output": {"path": str(tmp_path / "out")},
                       "sets": [{"name": name, "path": synthetic, "tasks": ["vqa"],
                                 "samples": 3, "metric": "answer_match"} for name in "AB"],
                       "sources": [{"kind": "dataset", "name": "raw"}]})
    ids = [i for u in plan_units(spec)[0] for i in read_items(**u.params)["id"]]
    assert len(ids) == 6 and len(set(ids)) == 6
