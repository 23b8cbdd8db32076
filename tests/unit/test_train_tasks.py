"""Training data restricted by task (``data[].tasks``), alone and with ``sources``.

Datasets are written by the shard writer the jobs use (:func:`pf_ray.jobs.shard.write_unit`),
so their markers carry the per-column counts (``counts.source``, ``counts.task``) that
:func:`~pf_ray.train.data.source_files` takes a one-file shard's rows from where they are
exact; the rows :func:`~pf_ray.train.data.read_units` reads must agree with those counts.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.schema import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_SCHEMA,
    REJECT_STAGE,
    SAMPLE_OUTPUT,
    SAMPLE_SCHEMA,
    UNIT,
    UNIT_ROWS,
    UNIT_T0,
    OutputSchema,
    to_table,
)
from pf_ray.data.synthetic import generate
from pf_ray.filters.schema import pf1m_output
from pf_ray.jobs.shard import write_unit
from pf_ray.specs import StorageConfig
from pf_ray.train import data as train_data
from pf_ray.train.data import (
    _marker_rows,
    data_files,
    epoch_counts,
    epoch_plan,
    read_units,
    source_files,
)
from pf_ray.train.spec import TrainSpec

COLUMNS = ["id", "conversations", "image", "image_bytes"]
STORAGE = StorageConfig()
# generate(0, 0, 36): 4 rows of each (source, task) below
PAIRS = {("synthetic_llava", "detail"), ("synthetic_llava", "reasoning"),
         ("synthetic_llava", "conversation"), ("synthetic_vl", "vqa"),
         ("synthetic_vl", "captions"), ("synthetic_vl", "boxes"),
         ("synthetic_vl", "classification"), ("synthetic_vl", "multiple_choice"),
         ("synthetic_text", "text_instruction")}


def _batch(rows: list[dict[str, Any]], unit: str, unit_rows: int) -> dict[str, list[Any]]:
    n = len(rows)
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    batch.update({UNIT: [unit] * n, UNIT_ROWS: [unit_rows] * n, UNIT_T0: [time.time()] * n,
                  REJECT_STAGE: [None] * n, REJECT_REASON: [None] * n,
                  REJECT_DETAIL: [None] * n})
    return batch


def write_dataset(root: Path, rows: list[dict[str, Any]], per_unit: int, *,
                  schema: OutputSchema = SAMPLE_OUTPUT, parts: int = 1) -> str:
    """A committed dataset of ``rows``, ``per_unit`` rows a unit; ``parts`` > 1: each unit
    reaches the writer in that many blocks, so its marker lists that many files."""
    ds = Dataset(str(root), STORAGE)
    for k, start in enumerate(range(0, len(rows), per_unit)):
        unit = rows[start:start + per_unit]
        step = -(-len(unit) // parts)
        for p in range(0, len(unit), step):
            write_unit(_batch(unit[p:p + step], f"u{k:03d}", len(unit)), ds, "abc", schema)
    return str(root)


def sample_rows(n: int = 36) -> list[dict[str, Any]]:
    batch = generate(0, 0, n)
    return [{k: batch[k][i] for k in batch} for i in range(n)]


def train(data: list[dict[str, Any]]) -> TrainSpec:
    return parse_spec({"kind": "train", "stage": "clever_s1", "model": "tiny", "data": data,
                       "storage_path": "runs", "run_name": "r"})


def read_all(spec: TrainSpec) -> list[str]:
    """The ids of one epoch (every dataset once: ratio 1, all rows), as build_dataset reads."""
    files = data_files(spec)
    counts = epoch_counts(spec, [sum(r for _, r in f) for f in files])
    ids: list[str] = []
    for unit in epoch_plan(files, counts, spec.seed):
        batch = {"source": [unit.source], "path": [unit.path], "rows": [unit.rows],
                 "keep": [unit.keep]}
        ids += read_units(batch, columns=COLUMNS, storage=STORAGE, seed=spec.seed,
                          select=[d.sources for d in spec.data],
                          select_tasks=[d.tasks for d in spec.data])["id"]
    return ids


def expected(rows: list[dict[str, Any]], sources: list[str] | None,
             tasks: list[str] | None) -> list[str]:
    return [r["id"] for r in rows if (sources is None or r["source"] in sources)
            and (tasks is None or r["task"] in tasks)]


def test_the_spec_takes_tasks_beside_sources() -> None:
    spec = train([{"path": "a", "tasks": ["vqa"], "sources": ["synthetic_vl"]}])
    assert spec.data[0].tasks == ["vqa"] and spec.data[0].sources == ["synthetic_vl"]
    assert train([{"path": "a"}]).data[0].tasks is None
    with pytest.raises(SpecError) as err:
        train([{"path": "a", "tasks": []}])
    assert any(p.startswith("data.0.tasks") for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(("sources", "tasks"), [
    (None, ["vqa"]),
    (None, ["detail", "captions", "text_instruction"]),
    (["synthetic_vl"], ["vqa", "detail", "boxes"]),  # detail: a synthetic_llava task
    (["synthetic_vl", "synthetic_text"], ["captions", "text_instruction"]),
    (["synthetic_llava"], None),
    (None, None),
])
@pytest.mark.parametrize("parts", [1, 2])
def test_counts_and_rows_read_follow_tasks_and_sources(tmp_path: Path, sources: list[str] | None,
                                                       tasks: list[str] | None,
                                                       parts: int) -> None:
    rows = sample_rows()
    root = write_dataset(tmp_path / "d", rows, per_unit=10, parts=parts)
    files = source_files(root, STORAGE, sources, tasks)
    want = expected(rows, sources, tasks)
    assert sum(n for _, n in files) == len(want)
    for path, n in files:  # per file too: read_units checks each file's count
        table = pq.read_table(path, columns=["source", "task"]).to_pylist()
        assert n == sum((sources is None or r["source"] in sources)
                        and (tasks is None or r["task"] in tasks) for r in table)
    data = {"path": root, **({"sources": sources} if sources else {}),
            **({"tasks": tasks} if tasks else {})}
    ids = read_all(train([data]))
    assert sorted(ids) == sorted(want)
    assert Counter(ids) == Counter(want)  # each kept row once


def test_marker_counts_are_used_only_where_they_are_exact() -> None:
    marker = {"rows": 10, "counts": {"source": {"a": 6, "b": 4},
                                     "task": {"x": 7, "y": 3}}}
    assert _marker_rows(marker, {}) == 10
    assert _marker_rows(marker, {"task": ["x"]}) == 7
    assert _marker_rows(marker, {"source": ["b"]}) == 4
    assert _marker_rows(marker, {"source": ["a", "b"], "task": ["y"]}) == 3  # every source
    assert _marker_rows(marker, {"source": ["a"], "task": ["x", "y", "z"]}) == 6
    assert _marker_rows(marker, {"source": ["c"], "task": ["x"]}) == 0  # no row of c
    assert _marker_rows(marker, {"source": ["a"], "task": ["x"]}) is None  # joint: read
    assert _marker_rows({"rows": 10, "counts": {"source": {"a": 10}}}, {"task": ["x"]}) is None
    assert _marker_rows({"rows": 10}, {"source": ["a"]}) is None  # no counts (older marker)


def test_one_file_shards_take_their_rows_from_the_marker(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    rows = sample_rows()
    root = write_dataset(tmp_path / "d", rows, per_unit=12)
    reads: list[Any] = []
    real = train_data._selection_columns
    monkeypatch.setattr(train_data, "_selection_columns",
                        lambda *a: reads.append(a) or real(*a))
    assert sum(n for _, n in source_files(root, STORAGE, None, ["vqa", "detail"])) == 8
    assert sum(n for _, n in source_files(root, STORAGE, ["synthetic_vl"], None)) == 20
    assert reads == []  # one column each: the markers' counts
    joint = source_files(root, STORAGE, ["synthetic_vl"], ["vqa", "detail"])
    assert sum(n for _, n in joint) == 4
    assert reads  # both columns drop rows of some shard: its columns were read


def test_older_markers_without_counts_read_the_columns(tmp_path: Path) -> None:
    rows = sample_rows(18)
    ds = Dataset(str(tmp_path / "old"), STORAGE)
    table = to_table({f.name: [r[f.name] for r in rows] for f in SAMPLE_SCHEMA if f.name in rows[0]},
                     SAMPLE_SCHEMA)
    ds.write_data("u000.parquet", table, REJECT_SCHEMA.empty_table())
    ds.commit("u000", {"files": ["u000.parquet"], "rows": 18})  # no counts
    files = source_files(str(tmp_path / "old"), STORAGE, ["synthetic_vl"], None)
    assert sum(n for _, n in files) == len(expected(rows, ["synthetic_vl"], None))
    files = source_files(str(tmp_path / "old"), STORAGE, None, ["vqa"])
    assert sum(n for _, n in files) == len(expected(rows, None, ["vqa"]))


def test_pf1m_shards_are_selected_by_task_and_read_as_conversations(tmp_path: Path) -> None:
    tasks = ["captions", "vqa", "region_caption"]
    rows = [{f.name: None for f in pf1m_output().schema} | {
        "id": f"p:{i}", "source": "coco" if i % 2 else "vqav2", "task": tasks[i % 3],
        "instruction": f"question {i}", "original": f"draft {i}", "output": f"polite {i}",
        "meta": "{}"} for i in range(12)]
    root = write_dataset(tmp_path / "pf1m", rows, per_unit=5, schema=pf1m_output())
    spec = train([{"path": root, "tasks": ["vqa", "captions"], "sources": ["coco"]}])
    want = expected(rows, ["coco"], ["vqa", "captions"])
    assert sum(n for f in data_files(spec) for _, n in f) == len(want) == 4
    assert sorted(read_all(spec)) == sorted(want)
    path, n = data_files(train([{"path": root, "tasks": ["region_caption"]}]))[0][0]
    out = read_units({"source": [0], "path": [path], "rows": [n], "keep": [n]},
                     columns=COLUMNS, storage=STORAGE, seed=0, select_tasks=[["region_caption"]])
    assert out["conversations"][0] == [{"role": "user", "content": "question 2"},
                                       {"role": "assistant", "content": "polite 2"}]


@pytest.mark.parametrize(("data", "message"), [
    ({"tasks": ["ocr"]},
     "data.0.tasks: ['ocr'] keeps none of the 36 rows of {root}; its rows' tasks: "
     "['boxes', 'captions', 'classification', 'conversation', 'detail', 'multiple_choice', "
     "'reasoning', 'text_instruction', 'vqa']"),
    ({"sources": ["synthetic_vl"], "tasks": ["detail"]},
     "data.0.tasks: ['detail'] keeps none of the 20 rows of sources ['synthetic_vl'] in "
     "{root}; those rows' tasks: ['boxes', 'captions', 'classification', "
     "'multiple_choice', 'vqa']"),
    ({"sources": ["coco"], "tasks": ["vqa"]},
     "data.0.sources: ['coco'] keeps none of the 36 rows of {root}; its rows' sources: "
     "['synthetic_llava', 'synthetic_text', 'synthetic_vl']"),
])
def test_a_selection_that_keeps_no_row_names_the_field(tmp_path: Path, data: dict[str, Any],
                                                       message: str) -> None:
    root = write_dataset(tmp_path / "d", sample_rows(), per_unit=10)
    other = write_dataset(tmp_path / "e", sample_rows(9), per_unit=9)
    spec = train([{"path": root, **data}, {"path": other}])
    with pytest.raises(ValueError) as err:
        data_files(spec)
    assert str(err.value) == message.format(root=root)


def test_an_empty_dataset_is_not_a_selection_error(tmp_path: Path) -> None:
    Dataset(str(tmp_path / "empty"), STORAGE)  # no committed shard
    spec = train([{"path": str(tmp_path / "empty"), "tasks": ["vqa"]}])
    assert data_files(spec) == [[]]


def test_a_dataset_without_a_task_column_is_named(tmp_path: Path) -> None:
    ds = Dataset(str(tmp_path / "x"), STORAGE)
    ds.write_data("u000.parquet", pa.table({"id": ["a:1"], "source": ["a"]}),
                  REJECT_SCHEMA.empty_table())
    ds.commit("u000", {"files": ["u000.parquet"], "rows": 1})
    with pytest.raises(ValueError, match=r"no task column to select rows on.*'id', 'source'"):
        source_files(str(tmp_path / "x"), STORAGE, None, ["vqa"])
