"""Eval items: (images, question, references) from pf-ray sample datasets, one row per
(item, answer source).

Every source answers the same items: a unit is one shard file of one set's dataset, and
its reader emits each selected item once per source, so the win rates compare sources on
identical (image, question) pairs. Selection (``sets.N.samples``) keeps the rows with the
lowest seeded hash of their id (reproducible, independent of shard layout), decided once at
plan time. Answers of ``dataset`` sources are filled here (joined by id); ``model`` and
``http`` sources answer in later steps. An item without a question, or a dataset answer
that is missing, is a reject with its reason.

An item keeps every image of its row: ``image`` / ``image_bytes`` and ``extra_images`` (the
images after the first, e.g. a change caption's "after" image; schema.py). A shard written
before ``extra_images`` existed reads it as nulls (one image per item).
"""

from __future__ import annotations

import heapq
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pf_ray.data.conversation import first_turn, row_seed
from pf_ray.data.io import Dataset, read_shard_columns
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, Batch
from pf_ray.eval.spec import EvalSet, EvalSpec
from pf_ray.jobs.shard import Unit, safe_key
from pf_ray.specs import StorageConfig
from pf_ray.storage import resolve

READ_COLUMNS = ("id", "source", "task", "image", "image_bytes", "extra_images", "conversations",
                "meta")
ITEM_COLUMNS = ("id", "item", "set", "answerer", "task", "image", "image_bytes",
                "extra_images", "instruction", "original", "references", "output",
                "finish_reason", "metric", "meta")
SCORE_COLUMNS = ("score", "reward", "rouge_l", "sts", "nli_logits")  # filled by later steps


def references_of(meta: dict[str, Any], answer: str) -> list[str]:
    """The ground truths an answer is compared with (module doc of :mod:`pf_ray.eval.spec`)."""
    for key in ("captions", "answers"):
        values = meta.get(key)
        if isinstance(values, list):
            unique = list(dict.fromkeys(str(v).strip() for v in values if v and str(v).strip()))
            if unique:
                return unique
    for key in ("answer", "paragraph", "caption"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return [value.strip()]
    return [answer]


def item_of(row: dict[str, Any]) -> tuple[str, str, list[str]] | tuple[str, str]:
    """``(question, raw annotation, references)`` of a sample row, or ``(reason, detail)``."""
    found = first_turn(row.get("conversations") or [])
    if len(found) == 2:
        return found  # type: ignore[return-value]
    _, question, answer = found  # type: ignore[misc]
    try:
        meta = json.loads(row.get("meta") or "{}")
    except ValueError:
        meta = {}
    return question, answer, references_of(meta if isinstance(meta, dict) else {}, answer)


def wanted(eset: EvalSet | dict[str, Any], source: str, task: str) -> bool:
    d = eset if isinstance(eset, dict) else eset.model_dump()
    return ((d["sources"] is None or source in d["sources"])
            and (d["tasks"] is None or task in d["tasks"]))


def _files(eset: EvalSet, storage: StorageConfig, k: int) -> list[str]:
    files = Dataset(eset.path, storage).shard_files()
    if not files:
        raise FileNotFoundError(f"sets.{k} ({eset.name}): {eset.path} holds no committed shards")
    scheme = eset.path.split("://", 1)[0] if "://" in eset.path else None
    return [f if scheme is None or f.startswith(f"{scheme}://") else f"{scheme}://{f}"
            for f in files]


def _keys(file: str, eset: EvalSet, seed: int, storage: StorageConfig) -> list[int]:
    fs, path = resolve(file, storage)
    t = pq.read_table(path, filesystem=fs, columns=["id", "source", "task"])
    return [row_seed(seed, i) for i, s, task in zip(*(t.column(c).to_pylist()
                                                     for c in ("id", "source", "task")),
                                                   strict=True) if wanted(eset, s, task)]


def plan_units(spec: EvalSpec) -> tuple[list[Unit], dict[str, dict[str, int]]]:
    """One unit per shard file of each set, and per set how many rows are eligible and
    taken. Reads the id, source and task columns once, on the driver."""
    units: list[Unit] = []
    report: dict[str, dict[str, int]] = {}
    sources = [s.model_dump(mode="json") for s in spec.sources]
    for k, source in enumerate(spec.sources):  # stored answers that are not there: a
        # missing input (fails the job), not one no_answer reject per row
        if source.kind == "dataset" and source.path is not None \
                and not Dataset(source.path, spec.storage).shard_files():
            raise FileNotFoundError(f"sources.{k} ({source.name}): {source.path} holds no "
                                    "committed shards")
    for k, eset in enumerate(spec.sets):
        files = _files(eset, spec.storage, k)
        with ThreadPoolExecutor(max_workers=16) as pool:
            per_file = list(pool.map(partial(_keys, eset=eset, seed=spec.seed,
                                             storage=spec.storage), files))
        keys = [x for ks in per_file for x in ks]
        if not keys:
            raise ValueError(f"sets.{k} ({eset.name}): no row of {eset.path} has source in "
                             f"{eset.sources} and task in {eset.tasks}")
        n = eset.samples
        threshold = None if n is None or n >= len(keys) else heapq.nsmallest(n, keys)[-1]
        report[eset.name] = {"eligible": len(keys), "taken": min(n or len(keys), len(keys))}
        for f, ks in zip(files, per_file, strict=True):
            if not any(threshold is None or x <= threshold for x in ks):
                continue  # no item of this set in the file: no (empty) unit
            stem = posixpath.basename(f).removesuffix(".parquet")
            units.append(Unit(safe_key(f"{eset.name}-{stem}"), {
                "file": f, "storage": spec.storage.model_dump(), "seed": spec.seed,
                "eset": eset.model_dump(mode="json"), "threshold": threshold,
                "sources": sources}))
    return units, report


def _dataset_answers(root: str, column: str, ids: list[str], storage: StorageConfig
                     ) -> dict[str, str]:
    data = Dataset(root, storage)
    files = data.shard_files()
    if not files or not ids:
        return {}
    table = pads.dataset(files, filesystem=data.fs, format="parquet").to_table(
        columns=["id", column], filter=pc.field("id").isin(ids))
    return {i: v for i, v in zip(table.column("id").to_pylist(),
                                 table.column(column).to_pylist(), strict=True)
            if isinstance(v, str)}


def read_items(*, file: str, storage: dict[str, Any], seed: int, eset: dict[str, Any],
               threshold: int | None, sources: list[dict[str, Any]]) -> Batch:
    """The selected items of one shard file, one row per (item, source)."""
    store = StorageConfig(**storage)
    fs, path = resolve(file, store)
    columns = read_shard_columns(fs, path, READ_COLUMNS)  # extra_images: null in older shards
    rows = [dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)]
    rows = [r for r in rows if wanted(eset, r["source"], r["task"])
            and (threshold is None or row_seed(seed, r["id"]) <= threshold)]
    joined = {s["name"]: _dataset_answers(s["path"], s["column"], [r["id"] for r in rows], store)
              for s in sources if s["kind"] == "dataset" and s["path"] is not None}
    out: Batch = {c: [] for c in (*ITEM_COLUMNS, *SCORE_COLUMNS, REJECT_STAGE, REJECT_REASON,
                                  REJECT_DETAIL)}
    for r in rows:
        got = item_of(r)
        for s in sources:
            # the set is part of the id: two sets may hold the same item
            rec = {"id": f"{eset['name']}/{r['id']}@{s['name']}", "item": r["id"],
                   "set": eset["name"],
                   "answerer": s["name"], "task": r["task"], "image": r.get("image"),
                   "image_bytes": r.get("image_bytes"),
                   "extra_images": r.get("extra_images") or None,
                   "instruction": "", "original": "", "references": [], "output": None, "finish_reason": None,
                   "metric": eset["metric"], "meta": r.get("meta") or "{}",
                   **dict.fromkeys(SCORE_COLUMNS),
                   REJECT_STAGE: None, REJECT_REASON: None, REJECT_DETAIL: None}
            if len(got) == 2:
                rec.update({REJECT_STAGE: "read", REJECT_REASON: got[0], REJECT_DETAIL: got[1]})
            else:
                rec["instruction"], rec["original"], rec["references"] = got
                if s["kind"] == "dataset":
                    answer = rec["original"] if s["path"] is None else \
                        joined[s["name"]].get(r["id"])
                    if answer is None:
                        rec.update({REJECT_STAGE: "read", REJECT_REASON: "no_answer",
                                    REJECT_DETAIL: f"source {s['name']}: no {s['column']!r} "
                                    f"for id {r['id']!r} in {s['path']}"})
                    else:
                        rec["output"], rec["finish_reason"] = answer, ""
            for c, v in rec.items():
                out[c].append(v)
    return out
