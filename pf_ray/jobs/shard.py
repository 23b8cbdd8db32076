"""A shard plan: input units -> steps -> committed shards, and its per-unit functions.

A plan is a list of :class:`Unit` (input shards: a range of synthetic rows, a slice of a
file), a reader that turns one unit into rows, and a list of steps. Each unit becomes one
output shard named ``<unit key>-<spec hash>``; committed shards are skipped on rerun
(see :mod:`pf_ray.data.io` for the layout and the commit protocol). Stages build plans;
:mod:`pf_ray.jobs.runner` executes them (Ray Data, or this process).

A unit is committed only when it is sound: an infrastructure fault in a step fails it
(:class:`~pf_ray.faults.UnitFailed`), and so does a reject fraction above the spec's
``faults.max_reject_fraction``; either way the job fails after the other units are done
and a rerun resumes the failed ones. A unit that reaches the writer in parts (after a
re-batching stage) is committed only when the ids of its parts are exactly the ids read
(:func:`ids_digest`, carried from :func:`read_unit` in the ``_unit_ids`` column), not when
their counts add up: a duplicated or a lost row fails the unit instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pf_ray.data.io import Dataset
from pf_ray.data.schema import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_SCHEMA,
    REJECT_STAGE,
    SAMPLE_OUTPUT,
    SAMPLE_SCHEMA,
    UNIT,
    UNIT_IDS,
    UNIT_ROWS,
    UNIT_T0,
    Batch,
    OutputSchema,
    to_table,
)
from pf_ray.faults import UnitFailed
from pf_ray.specs import FaultPolicy, OutputConfig, StorageConfig
from pf_ray.steps.base import StepDef, num_rows
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
class ShardPlan:
    """What a shard job computes; built by a stage from its spec, executed by the runner."""

    kind: str
    spec_hash: str
    spec: dict[str, Any]
    units: list[Unit]
    reader: Reader
    output: OutputConfig
    storage: StorageConfig
    steps: list[StepDef] = field(default_factory=list)
    schema: OutputSchema = SAMPLE_OUTPUT  # what the kind writes (its registration's output)
    # A Ray Data stage applied after the steps (e.g. ray.data.llm); it may re-batch rows.
    ray_stage: Callable[[Any], Any] | None = None
    faults: FaultPolicy = field(default_factory=FaultPolicy)
    # Reject reasons that are the stage's intent, not a fault (left out of the fraction).
    expected_reasons: tuple[str, ...] = ("not_selected",)
    # Optional hooks: ``unit_stats(batch, idx)`` summarises the rows ``idx`` of a unit's
    # block (kept and rejected) into a JSON-able dict stored in the unit's marker under
    # ``stats`` (a list: one entry per block of the unit); ``summarize(markers)`` merges the
    # committed markers' stats into the manifest's ``summary``.
    unit_stats: Callable[[Batch, list[int]], dict[str, Any]] | None = None
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None

    def shard_name(self, unit: Unit) -> str:
        return f"{unit.key}-{self.spec_hash}"


@dataclass
class ShardResult:
    """The result of a shard job: what this run did and the dataset's manifest."""

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

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.manifest.get("kind"), "root": self.root,
                "totals": self.manifest["totals"],
                "run": {"shards_written": self.written, "shards_skipped": self.skipped,
                        "rows": self.rows, "rejects": self.rejects,
                        "seconds": round(self.seconds, 3)}}


class OutputExistsError(RuntimeError):
    pass


class JobFailed(RuntimeError):
    """Units of a job could not be committed (infrastructure fault, too many rejects)."""


# ------------------------------------------------------------------ per-unit functions


_DIGEST_MOD = 2**256


def ids_digest(ids: Iterable[object]) -> str:
    """``"N:HEX"``: how many ids, and the sum modulo 2**256 of their SHA-256.

    A multiset hash: the same for any order and any split of the ids into parts, so the
    parts' digests combine (:func:`combine_digests`) into the digest of their union, and a
    duplicated id or a lost one changes it. No list of ids is stored anywhere.
    """
    total, n = 0, 0
    for i in ids:
        total += int.from_bytes(hashlib.sha256(str(i).encode()).digest(), "big")
        n += 1
    return f"{n}:{total % _DIGEST_MOD:064x}"


def combine_digests(digests: Iterable[str]) -> str:
    """The :func:`ids_digest` of the union (as a multiset) of the parts with ``digests``."""
    total, n = 0, 0
    for d in digests:
        count, _, value = d.partition(":")
        n += int(count)
        total += int(value, 16)
    return f"{n}:{total % _DIGEST_MOD:064x}"


def read_unit(batch: Batch, reader: Reader) -> Batch:
    """One row per unit in, that unit's rows out (with the bookkeeping columns: the unit,
    its row count and :func:`ids_digest` of its ids, so the writer can tell a complete
    unit from parts that merely add up)."""
    out: Batch = {}
    for key, params in zip(batch[UNIT], batch["_params"], strict=True):
        t0 = time.time()
        rows = reader(**json.loads(params))
        n = num_rows(rows)
        rows.setdefault(REJECT_STAGE, [None] * n)
        rows.setdefault(REJECT_REASON, [None] * n)
        rows.setdefault(REJECT_DETAIL, [None] * n)
        rows.update({UNIT: [key] * n, UNIT_ROWS: [n] * n, UNIT_T0: [t0] * n,
                     UNIT_IDS: [ids_digest(rows.get("id", []))] * n})
        for col, values in rows.items():
            out.setdefault(col, []).extend(values)
    return out


def _jsonable_row(batch: Batch, i: int, columns: Sequence[str]) -> str:
    def enc(v: Any) -> Any:
        return {"$base64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v

    return json.dumps({c: enc(batch[c][i]) for c in columns if c in batch},
                      ensure_ascii=False, sort_keys=True, default=str)


def write_unit(batch: Batch, dataset: Dataset, spec_hash: str, schema: OutputSchema,
               max_reject_fraction: float = 1.0,
               expected_reasons: Sequence[str] = ("not_selected",),
               unit_stats: Callable[[Batch, list[int]], dict[str, Any]] | None = None
               ) -> Batch:
    """Commit the rows and rejects of each unit in ``batch``; one summary row per unit.

    Normally a block holds one whole unit, written as ``<name>.parquet``. A block holding
    part of a unit (after a re-batching stage) is written as a part file; the writer that
    completes the unit commits its marker. Whole or in parts, a unit is complete when its
    ids are those read (``_unit_ids``, see :func:`ids_digest`); parts that reach the row
    count with other ids (a duplicate, a lost row) are not committed: the summary row
    says so in ``failed``. (Batches without ``_unit_ids``, built by hand, fall back to
    counting rows.) A unit whose unexpected rejects exceed ``max_reject_fraction`` of its
    rows is not committed either, and the runner fails the job.
    """
    t_write = time.time()
    units: dict[str, list[int]] = {}
    for i, unit in enumerate(batch[UNIT]):
        units.setdefault(unit, []).append(i)
    out: Batch = {"name": [], "rows": [], "rejects": [], "failed": []}
    for unit, idx in units.items():
        name = f"{unit}-{spec_hash}"
        expected = batch[UNIT_ROWS][idx[0]]
        rows, rejects, info = _split(batch, idx, schema)
        if unit_stats is not None:
            info["stats"] = [unit_stats(batch, idx)]
        info.update(seconds_total=round(time.time() - batch[UNIT_T0][idx[0]], 4))
        want = batch[UNIT_IDS][idx[0]] if UNIT_IDS in batch else None
        got = ids_digest(batch["id"][i] for i in idx)
        whole = len(idx) == expected and want in (None, got)
        failed: str | None = None
        if whole:  # the whole unit: one file, committed at once
            file = f"{name}.parquet"
        else:
            ids = sorted(str(batch["id"][i]) for i in idx)
            part = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
            file = f"{name}.part-{part}.parquet"
            dataset.write_data(file, rows, rejects)
            info.update(files=[file], reject_files=[file] if info["rejects"] else [], ids=got)
            parts = dataset.write_part_info(name, part, info)
            seen = sum(p["rows"] + p["rejects"] for p in parts)
            if seen < expected:
                continue
            failed = _parts_error(unit, parts, seen, expected, want)
            info = _merge_parts(parts)
        failed = failed or reject_fraction_error(unit, info, max_reject_fraction,
                                                 expected_reasons)
        if failed is None:
            if whole:
                dataset.write_data(file, rows, rejects)
                info.update(files=[file], reject_files=[file] if info["rejects"] else [],
                            seconds_write=round(time.time() - t_write, 4))
            dataset.commit(name, {"unit": unit, "spec_hash": spec_hash, **info})
        out["name"].append(name)
        out["rows"].append(info["rows"])
        out["rejects"].append(info["rejects"])
        out["failed"].append(failed)
    return out


def _parts_error(unit: str, parts: list[dict[str, Any]], seen: int, expected: int,
                 want: str | None) -> str | None:
    """Why parts that reach the unit's row count do not make the unit, or None."""
    if want is None:  # no digest known: the counts must match exactly
        same = seen == expected
    else:
        same = "ids" in parts[0] and all("ids" in p for p in parts) and combine_digests(
            p["ids"] for p in parts) == want
    if same:
        return None
    return (f"unit {unit}: its {len(parts)} part(s) hold {seen} row(s) whose ids are not the "
            f"{expected} id(s) read (a row duplicated or lost on the way to the writer); not "
            "committed: rerun to redo the unit")


def reject_fraction_error(unit: str, info: dict[str, Any], limit: float,
                          expected_reasons: Sequence[str]) -> str | None:
    """Why a unit must not be committed (too many unexpected rejects), or None."""
    per_reason = info["rejects_per_reason"]
    excluded = sum(n for r, n in per_reason.items() if r in expected_reasons)
    bad = info["rejects"] - excluded
    considered = info["rows"] + bad
    if considered == 0 or bad / considered <= limit:
        return None
    counts = ", ".join(f"{r}: {n}" for r, n in sorted(per_reason.items(), key=lambda x: -x[1])
                       if r not in expected_reasons)
    return (f"unit {unit}: {bad} of {considered} rows rejected ({bad / considered:.0%} > "
            f"faults.max_reject_fraction {limit}); rejects per reason: {counts}. Not "
            "committed: fix the cause (or raise faults.max_reject_fraction if these rejects "
            "are expected) and rerun")


def _split(batch: Batch, idx: list[int], schema: OutputSchema
           ) -> tuple[pa.Table, pa.Table, dict]:
    """(rows, rejects, counts) of the rows ``idx`` of a batch."""
    sch = schema.schema
    good = [i for i in idx if batch[REJECT_REASON][i] is None]
    bad = [i for i in idx if batch[REJECT_REASON][i] is not None]
    rows = to_table({f.name: [batch[f.name][i] for i in good] for f in sch if f.name in batch},
                    sch, name=schema.name)
    rejects = to_table({
        "id": [batch["id"][i] for i in bad],
        "stage": [batch[REJECT_STAGE][i] or "unknown" for i in bad],
        "reason": [batch[REJECT_REASON][i] for i in bad],
        "detail": [batch[REJECT_DETAIL][i] or "" for i in bad],
        "row": [_jsonable_row(batch, i, SAMPLE_SCHEMA.names + sch.names) for i in bad],
    }, REJECT_SCHEMA, name="reject")
    counts: dict[str, dict[str, int]] = {}
    for col in schema.count_columns:
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
        if "stats" in p:
            merged.setdefault("stats", []).extend(p["stats"])
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


def prepare_output(plan: ShardPlan) -> tuple[Dataset, list[Unit], int]:
    """Apply ``output.mode``; return the dataset, the pending units and the skipped count."""
    ds = Dataset(plan.output.path, plan.storage)
    manifest = ds.read_manifest()
    if plan.output.mode == "overwrite":
        ds.clear()
        manifest = None
    elif manifest is not None and plan.output.mode == "error":
        raise OutputExistsError(f"{plan.output.path} already holds a dataset "
                                "(output.mode is 'error')")
    if manifest is not None and manifest.get("spec_hash") != plan.spec_hash:
        raise OutputExistsError(
            f"{plan.output.path} holds a dataset of another spec (hash "
            f"{manifest.get('spec_hash')}, this job {plan.spec_hash}); write to a new "
            "output.path or set output.mode=overwrite")
    done = ds.committed()
    pending = [u for u in plan.units if plan.shard_name(u) not in done]
    ds.discard_uncommitted({plan.shard_name(u) for u in pending})  # a killed run's leftovers
    names = [plan.shard_name(u) for u in plan.units]
    if len(set(names)) != len(names):
        raise ValueError("two units of the job share a key; shard names would collide")
    return ds, pending, len(plan.units) - len(pending)


def run_units_locally(plan: ShardPlan, dataset: Dataset, pending: list[Unit],
                      done: Callable[[dict[str, Any]], None]) -> None:
    """The in-process executor: the same per-unit functions, one unit after another."""
    if plan.ray_stage is not None:
        raise ValueError(f"the {plan.kind} job has a Ray Data stage (e.g. the vllm engine); "
                         "run it with executor 'ray'")
    runner = LocalRunner(plan.steps, plan.faults)
    for unit in pending:
        batch = read_unit({UNIT: [unit.key], "_params": [json.dumps(unit.params)]},
                          plan.reader)
        out = write_unit(runner(batch), dataset, plan.spec_hash, plan.schema,
                         plan.faults.max_reject_fraction, plan.expected_reasons,
                         plan.unit_stats)
        done({k: v[0] for k, v in out.items()})


def failure_from(exc: BaseException) -> JobFailed | None:
    """The :class:`JobFailed` for a unit failure found in ``exc`` or its causes (Ray wraps
    a task's exception in its own, whose text carries the traceback), or None when ``exc``
    is something else."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, JobFailed):
            return e
        if isinstance(e, UnitFailed):
            return JobFailed(_unit_message(str(e)))
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return JobFailed(_unit_message(str(exc))) if _MARKER in str(exc) else None


_MARKER = "UnitFailed: "


def _unit_message(text: str) -> str:
    """The failure's own message, without a traceback around it."""
    if _MARKER in text:
        text = text[text.rindex(_MARKER) + len(_MARKER):]
    return text.strip().splitlines()[0] if text.strip() else text


def finish(plan: ShardPlan, dataset: Dataset, summaries: list[dict[str, Any]], skipped: int,
           t0: float, executor: str, error: JobFailed | None) -> ShardResult:
    """Rebuild the manifest from what is committed; raise if any unit failed."""
    committed = [s for s in summaries if not s.get("failed")]
    failed = [s["failed"] for s in summaries if s.get("failed")]
    seconds = time.time() - t0
    run = {"started_at": t0, "seconds": round(seconds, 3), "executor": executor,
           "shards_written": len(committed), "shards_skipped": skipped,
           "units_failed": len(failed) + (error is not None)}
    extra = None
    if plan.summarize is not None:
        extra = {"summary": plan.summarize(list(dataset.committed().values()))}
    manifest = dataset.write_manifest(kind=plan.kind, spec_hash=plan.spec_hash,
                                      spec=plan.spec, run=run, extra=extra)
    if error is not None or failed:
        lines = ([str(error)] if error is not None else []) + failed
        raise JobFailed(f"{plan.kind} job failed: {len(lines)} unit(s) not committed "
                        f"({len(committed)} committed by this run, {skipped} before); rerun "
                        "the same spec to resume.\n" + "\n".join(f"  - {x}" for x in lines))
    return ShardResult(plan.output.path, len(committed), skipped,
                       sum(s["rows"] for s in committed), sum(s["rejects"] for s in committed),
                       seconds, manifest)
