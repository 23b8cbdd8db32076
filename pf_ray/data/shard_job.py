"""A dataset job: input units -> steps -> committed shards, on Ray Data or in-process.

A job is a list of :class:`Unit` (input shards: a range of synthetic rows, a slice of a
file), a reader that turns one unit into rows, and a list of steps. Each unit becomes one
output shard named ``<unit key>-<spec hash>``; committed shards are skipped on rerun
(see :mod:`pf_ray.data.io` for the layout and the commit protocol).

On Ray, units flow as blocks through ``map_batches`` (read as tasks, steps as tasks or
actor pools, write as tasks) and the driver only sees one small summary row per shard;
the same functions run in one plain Python process with ``executor="local"``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pf_ray.config import OutputConfig, StorageConfig
from pf_ray.data.io import Dataset
from pf_ray.data.schema import COUNT_COLUMNS, REJECT_SCHEMA, SCHEMAS, to_table
from pf_ray.steps.base import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    UNIT,
    UNIT_ROWS,
    UNIT_T0,
    Batch,
    StepDef,
    num_rows,
)
from pf_ray.steps.local import LocalRunner

Reader = Callable[..., Batch]  # reader(**unit.params) -> rows of that unit


@dataclass(frozen=True)
class Unit:
    """One input shard. ``key`` is filesystem-safe (no dots) and unique within the job."""

    key: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.key):
            raise ValueError(f"unit key {self.key!r}: use letters, digits, '_' and '-' only "
                             "(see safe_key)")


def safe_key(text: str) -> str:
    """``text`` with every run of characters outside [A-Za-z0-9_-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


@dataclass
class ShardJob:
    kind: str
    spec_hash: str
    spec: dict[str, Any]
    units: list[Unit]
    reader: Reader
    output: OutputConfig
    storage: StorageConfig
    steps: list[StepDef] = field(default_factory=list)
    schema: str = "sample"
    # A Ray Data stage applied after the steps (e.g. ray.data.llm); it may re-batch rows.
    ray_stage: Callable[[Any], Any] | None = None

    def shard_name(self, unit: Unit) -> str:
        return f"{unit.key}-{self.spec_hash}"


@dataclass
class JobResult:
    root: str
    written: int  # shards committed by this run
    skipped: int  # shards found committed already
    rows: int  # rows written by this run
    rejects: int  # rejects written by this run
    seconds: float
    manifest: dict[str, Any]

    def summary(self) -> str:
        t = self.manifest["totals"]
        return (f"{self.root}: {t['shards']} shard(s), {t['rows']} row(s), {t['rejects']} "
                f"reject(s) in total; this run wrote {self.written} shard(s) "
                f"({self.rows} rows, {self.rejects} rejects) and skipped {self.skipped} "
                f"in {self.seconds:.1f}s")


class OutputExistsError(RuntimeError):
    pass


# ------------------------------------------------------------------ per-unit functions


def read_unit(batch: Batch, reader: Reader) -> Batch:
    """One row per unit in, that unit's rows out (with the bookkeeping columns)."""
    out: Batch = {}
    for key, params in zip(batch[UNIT], batch["_params"], strict=True):
        t0 = time.time()
        rows = reader(**json.loads(params))
        n = num_rows(rows)
        rows.setdefault(REJECT_STAGE, [None] * n)
        rows.setdefault(REJECT_REASON, [None] * n)
        rows.setdefault(REJECT_DETAIL, [None] * n)
        rows.update({UNIT: [key] * n, UNIT_ROWS: [n] * n, UNIT_T0: [t0] * n})
        for col, values in rows.items():
            out.setdefault(col, []).extend(values)
    return out


def _jsonable_row(batch: Batch, i: int, columns: Sequence[str]) -> str:
    def enc(v: Any) -> Any:
        return {"$base64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v

    return json.dumps({c: enc(batch[c][i]) for c in columns if c in batch},
                      ensure_ascii=False, sort_keys=True, default=str)


def write_unit(batch: Batch, dataset: Dataset, spec_hash: str, schema: str) -> Batch:
    """Commit the rows and rejects of each unit in ``batch``; one summary row per commit.

    Normally a block holds one whole unit, written as ``<name>.parquet``. A block holding
    part of a unit (after a re-batching stage) is written as a part file; the writer that
    completes the unit commits its marker.
    """
    t_write = time.time()
    units: dict[str, list[int]] = {}
    for i, unit in enumerate(batch[UNIT]):
        units.setdefault(unit, []).append(i)
    out: Batch = {"name": [], "rows": [], "rejects": []}
    for unit, idx in units.items():
        name = f"{unit}-{spec_hash}"
        expected = batch[UNIT_ROWS][idx[0]]
        rows, rejects, info = _split(batch, idx, schema)
        info.update(seconds_total=round(time.time() - batch[UNIT_T0][idx[0]], 4))
        if len(idx) == expected:  # the whole unit: one file, committed at once
            file = f"{name}.parquet"
            dataset.write_data(file, rows, rejects)
            info.update(files=[file], reject_files=[file] if info["rejects"] else [],
                        seconds_write=round(time.time() - t_write, 4))
            dataset.commit(name, {"unit": unit, "spec_hash": spec_hash, **info})
        else:
            ids = sorted(str(batch["id"][i]) for i in idx)
            part = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
            file = f"{name}.part-{part}.parquet"
            dataset.write_data(file, rows, rejects)
            info.update(files=[file], reject_files=[file] if info["rejects"] else [])
            parts = dataset.write_part_info(name, part, info)
            if sum(p["rows"] + p["rejects"] for p in parts) < expected:
                continue
            info = _merge_parts(parts)
            dataset.commit(name, {"unit": unit, "spec_hash": spec_hash, **info})
        out["name"].append(name)
        out["rows"].append(info["rows"])
        out["rejects"].append(info["rejects"])
    return out


def _split(batch: Batch, idx: list[int], schema: str) -> tuple[pa.Table, pa.Table, dict]:
    """(rows, rejects, counts) of the rows ``idx`` of a batch."""
    sch = SCHEMAS[schema]
    good = [i for i in idx if batch[REJECT_REASON][i] is None]
    bad = [i for i in idx if batch[REJECT_REASON][i] is not None]
    rows = to_table({f.name: [batch[f.name][i] for i in good] for f in sch if f.name in batch},
                    sch, name=schema)
    rejects = to_table({
        "id": [batch["id"][i] for i in bad],
        "stage": [batch[REJECT_STAGE][i] or "unknown" for i in bad],
        "reason": [batch[REJECT_REASON][i] for i in bad],
        "detail": [batch[REJECT_DETAIL][i] or "" for i in bad],
        "row": [_jsonable_row(batch, i, SCHEMAS["sample"].names + sch.names) for i in bad],
    }, REJECT_SCHEMA, name="reject")
    counts: dict[str, dict[str, int]] = {}
    for col in COUNT_COLUMNS.get(schema, ("source",)):
        values = counts.setdefault(col, {})
        for i in good:
            key = str(batch[col][i]) if col in batch else "unknown"
            values[key] = values.get(key, 0) + 1
    per_reason: dict[str, int] = {}
    for i in bad:
        per_reason[batch[REJECT_REASON][i]] = per_reason.get(batch[REJECT_REASON][i], 0) + 1
    info = {"rows": len(good), "rejects": len(bad), "counts": counts,
            "rejects_per_reason": per_reason}
    return rows, rejects, info


def _merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"rows": 0, "rejects": 0, "counts": {}, "rejects_per_reason": {},
                              "files": [], "reject_files": [], "parts": len(parts),
                              "seconds_total": max(p["seconds_total"] for p in parts)}
    for p in parts:
        merged["rows"] += p["rows"]
        merged["rejects"] += p["rejects"]
        merged["files"] += p["files"]
        merged["reject_files"] += p["reject_files"]
        for col, values in p["counts"].items():
            target = merged["counts"].setdefault(col, {})
            for k, v in values.items():
                target[k] = target.get(k, 0) + v
        for k, v in p["rejects_per_reason"].items():
            merged["rejects_per_reason"][k] = merged["rejects_per_reason"].get(k, 0) + v
    merged["files"].sort()
    merged["reject_files"].sort()
    return merged


# ------------------------------------------------------------------ drivers


def prepare_output(job: ShardJob) -> tuple[Dataset, list[Unit], int]:
    """Apply ``output.mode``; return the dataset, the pending units and the skipped count."""
    ds = Dataset(job.output.path, job.storage)
    manifest = ds.read_manifest()
    if job.output.mode == "overwrite":
        ds.clear()
        manifest = None
    elif manifest is not None and job.output.mode == "error":
        raise OutputExistsError(f"{job.output.path} already holds a dataset "
                                "(output.mode is 'error')")
    if manifest is not None and manifest.get("spec_hash") != job.spec_hash:
        raise OutputExistsError(
            f"{job.output.path} holds a dataset of another spec (hash "
            f"{manifest.get('spec_hash')}, this job {job.spec_hash}); write to a new "
            "output.path or set output.mode=overwrite")
    done = ds.committed()
    pending = [u for u in job.units if job.shard_name(u) not in done]
    ds.discard_uncommitted({job.shard_name(u) for u in pending})  # a killed run's leftovers
    names = [job.shard_name(u) for u in job.units]
    if len(set(names)) != len(names):
        raise ValueError("two units of the job share a key; shard names would collide")
    return ds, pending, len(job.units) - len(pending)


ProgressFn = Callable[[dict[str, Any]], None]


def run_shard_job(job: ShardJob, *, executor: str = "ray",
                  progress: ProgressFn | None = None) -> JobResult:
    """Run a shard job; ``executor`` is ``"ray"`` (Ray Data) or ``"local"`` (this process)."""
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', received {executor!r}")
    t0 = time.time()
    dataset, pending, skipped = prepare_output(job)
    summaries: list[dict[str, Any]] = []

    def done(summary: dict[str, Any]) -> None:
        summaries.append(summary)
        if progress:
            progress({"done": len(summaries), "total": len(pending), **summary})

    if pending and executor == "ray":
        _run_ray(job, dataset, pending, done)
    elif pending:
        if job.ray_stage is not None:
            raise ValueError(f"the {job.kind} job has a Ray Data stage (e.g. the vllm engine); "
                             "run it with executor 'ray'")
        runner = LocalRunner(job.steps)
        for unit in pending:
            batch = read_unit({UNIT: [unit.key], "_params": [json.dumps(unit.params)]},
                              job.reader)
            out = write_unit(runner(batch), dataset, job.spec_hash, job.schema)
            done({k: v[0] for k, v in out.items()})
    seconds = time.time() - t0
    run = {"started_at": t0, "seconds": round(seconds, 3), "executor": executor,
           "shards_written": len(summaries), "shards_skipped": skipped}
    manifest = dataset.write_manifest(kind=job.kind, spec_hash=job.spec_hash, spec=job.spec,
                                      run=run)
    return JobResult(job.output.path, len(summaries), skipped,
                     sum(s["rows"] for s in summaries), sum(s["rejects"] for s in summaries),
                     seconds, manifest)


def _run_ray(job: ShardJob, dataset: Dataset, pending: list[Unit],
             done: Callable[[dict[str, Any]], None]) -> None:
    import ray.data
    from ray.data import DataContext

    from pf_ray.steps.ray_adapter import map_steps, map_units

    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size
    ctx.target_max_block_size = None  # never split a unit's block (see ray_adapter)
    try:
        items = [{UNIT: u.key, "_params": json.dumps(u.params)} for u in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = map_units(ds, read_unit, reader=job.reader)
        ds = map_steps(ds, job.steps)
        if job.ray_stage is not None:
            ds = job.ray_stage(ds)
        ds = map_units(ds, write_unit, dataset=dataset, spec_hash=job.spec_hash,
                       schema=job.schema)
        for row in ds.iter_rows():
            done(dict(row))
    finally:
        ctx.target_max_block_size = saved


