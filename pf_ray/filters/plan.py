"""``kind: filter``: rewrite datasets -> PF-1M shards, the paper.md §5 chain as steps.

Units are the committed shard files of the inputs (one output shard each). Steps, in the
paper's order: length and change (CPU tasks), then STS, CLIPScore, NLI and reward (each an
actor pool that loads its model once per actor, GPU or CPU per ``pool``), then the optional
top-k pass. A row a filter drops goes to ``rejects/`` with the filter's reason and a detail
naming score and threshold (the reject's ``row`` holds every score computed so far); such
drops are intended and never count towards ``faults.max_reject_fraction``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

import pyarrow.parquet as pq

from pf_ray.data.io import Dataset
from pf_ray.data.schema import ADDED_COLUMNS, Batch
from pf_ray.filters.registry import filters, reasons
from pf_ray.filters.schema import pf1m_output, score_columns
from pf_ray.filters.spec import FilterSpecBase
from pf_ray.filters.stats import FilterStats, summarize
from pf_ray.filters.topk import find_threshold, top_k_filter
from pf_ray.jobs.shard import ShardPlan, Unit, safe_key
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources, StepDef
from pf_ray.storage import resolve

REWRITE_COLUMNS = ("id", "source", "task", "image", "image_bytes", "extra_images",
                   "instruction", "original", "output", "finish_reason", "meta")


def read_rewrites(*, file: str, storage: dict[str, Any], scores: list[str]) -> Batch:
    """One committed shard of a rewrite (or pf1m) dataset: its columns, the ``scores``
    (the filters' columns) it lacks as None (a pf1m input keeps its scores, e.g. for the
    top-k pass)."""
    fs, path = resolve(file, StorageConfig(**storage))
    names = pq.read_schema(path, filesystem=fs).names
    missing = [c for c in REWRITE_COLUMNS
               if c not in names and c != "finish_reason" and c not in ADDED_COLUMNS]
    if missing:
        raise ValueError(f"{file}: not a rewrite dataset shard, missing column(s) {missing}")
    cols = [c for c in (*REWRITE_COLUMNS, *scores) if c in names]
    batch: Batch = pq.read_table(path, filesystem=fs, columns=cols).to_pydict()
    n = len(batch["id"])
    for c in ("finish_reason", *ADDED_COLUMNS, *scores):
        batch.setdefault(c, [None] * n)
    return batch


def input_files(inputs: list[str], storage: StorageConfig) -> list[tuple[int, str]]:
    out = []
    for k, root in enumerate(inputs):
        data = Dataset(root, storage)
        if not data.shard_files():
            raise FileNotFoundError(f"inputs.{k}: {root} holds no committed shards")
        files = data.unit_files()  # an empty part of a unit is no unit
        scheme = root.split("://", 1)[0] if "://" in root else None
        out += [(k, f if scheme is None or f.startswith(f"{scheme}://") else f"{scheme}://{f}")
                for f in files]
    return out


def filter_steps(spec: FilterSpecBase) -> list[StepDef]:
    """The enabled filters of ``spec`` as steps, in chain order (the registry's)."""
    return [f.step(getattr(spec, f.name), spec) for f in filters()
            if getattr(spec, f.name).enabled]


def plan_filter(spec: FilterSpecBase) -> ShardPlan:
    files = input_files(spec.inputs, spec.storage)
    units = [Unit(safe_key(f"i{k}-{posixpath.basename(f).removesuffix('.parquet')}"),
                  {"file": f, "storage": spec.storage.model_dump(),
                   "scores": list(score_columns())}) for k, f in files]
    steps = filter_steps(spec)
    recorded = spec.model_dump(mode="json")
    digest = filter_hash(spec)
    if spec.top_k is not None:
        t = spec.top_k
        threshold = find_threshold([f for _, f in files], t.score, t.k, spec.storage)
        steps.append(StepDef("top_k", top_k_filter, ("id", t.score), (),
                             Resources(batch_size=4096),
                             {"score": t.score, "k": t.k, "threshold": threshold}))
        # the threshold depends on the inputs: other inputs, other shard names
        recorded["top_k_threshold"] = list(threshold) if threshold else None
        if threshold is not None:
            digest = _hash_with(digest, threshold)
    return ShardPlan(kind="filter", spec_hash=digest, spec=recorded, units=units,
                     reader=read_rewrites, output=spec.output, storage=spec.storage,
                     steps=steps, schema=pf1m_output(), faults=spec.faults,
                     expected_reasons=("not_selected", *reasons()),
                     unit_stats=FilterStats(spec.nli.labels), summarize=summarize)


def filter_hash(spec: FilterSpecBase) -> str:
    """The spec hash without where the models run (``pool`` blocks: CPUs, GPUs, actors,
    batch size, device), so a job resumes on a bigger pool with the same shard names."""
    payload = spec.model_dump(mode="json", exclude={"storage", "ray", "faults", "output",
                                                     "name", "pool"})
    for block in payload.values():
        if isinstance(block, dict):
            block.pop("pool", None)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _hash_with(digest: str, threshold: tuple[float, str]) -> str:
    return hashlib.sha256(f"{digest}:{threshold[0]!r}:{threshold[1]}".encode()).hexdigest()[:10]
