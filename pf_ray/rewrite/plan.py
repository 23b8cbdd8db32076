"""``kind: rewrite``: pf-ray sample datasets -> rewrites, one output shard per input shard.

Units are the committed shard files of the inputs (as the distort kind's), so a rerun of a
killed job skips the committed ones and every id comes out exactly once. Steps:
``prepare_rows`` (CPU tasks) -> :class:`~pf_ray.rewrite.steps.Rewrite` (an actor pool sized
by the engine block: CPUs / GPUs per actor, min / max actors, batch size). An engine that
runs as a dataset stage (``vllm``: ``ray.data.llm``) replaces the actor pool:
``prepare_rows`` -> ``read_images`` (CPU tasks) -> the plan's Ray Data stage
(:mod:`pf_ray.rewrite.vllm`).

Rejects: ``not_selected`` (the stage's intent, outside ``faults.max_reject_fraction``);
bad rows (``no_instruction``, ``no_raw_answer``, the image loader's reasons,
``prompt_too_long``) and the output checks (``empty_output``, ``repetition_loop``,
``missing_eos``, ``ellipsis_ending``) count towards it: a trained rewriter fails the checks
on a few percent of rows, so a unit where most rows fail them points at a broken model,
prompt format or decoding, and is not committed (raise ``faults.max_reject_fraction`` to
1.0 for an untrained model, as the tests do).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq

from pf_ray.data.conversation import read_pairs, row_seed
from pf_ray.data.images import ImageLoader
from pf_ray.data.io import Dataset
from pf_ray.data.schema import REWRITE_OUTPUT, SAMPLE_COLUMNS, Batch
from pf_ray.data.select import selected
from pf_ray.engines import registry as engines
from pf_ray.jobs.inputs import input_units
from pf_ray.jobs.shard import ShardPlan, Unit
from pf_ray.rewrite.engines import engine_factory
from pf_ray.rewrite.spec import RewriteSpecBase as RewriteSpec
from pf_ray.rewrite.steps import PREPARED, Rewrite, prepare_rows
from pf_ray.steps.base import Resources, StepDef
from pf_ray.storage import resolve

# Where and how the engine runs, not what it computes: left out of the shard names, so a
# job resumes on a bigger pool or behind another address.
SCHEDULING = ("num_cpus", "num_gpus", "min_actors", "max_actors", "batch_size", "base_url",
              "api_key_env", "timeout_s", "max_concurrency", "num_threads", "device",
              "accelerator_type")


# The rewrite step sorts this many engine batches of rows by length before batching them.
LENGTH_BUCKETS = 8


def read_samples(*, file: str, storage: dict[str, Any]) -> Batch:
    """One committed shard file of a pf-ray sample dataset, one row per sample."""
    batch = read_pairs(file, storage, "one_turn", SAMPLE_COLUMNS)
    batch.pop("turn", None)
    return batch


def rewrite_hash(spec: RewriteSpec) -> str:
    """What the job computes (inputs, selection, model, prompt, decoding, checks)."""
    exclude: dict[str, Any] = {k: True for k in ("storage", "ray", "faults", "output", "name")}
    exclude["engine"] = {k: True for k in SCHEDULING}
    exclude["images"] = {"fetch_threads": True}
    payload = spec.model_dump(mode="json", exclude=exclude)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _keys(file: str, spec: RewriteSpec) -> dict[str, list[int]]:
    """Seeded keys of the selected rows of one shard file, per source of select.samples."""
    fs, path = resolve(file, spec.storage)
    table = pq.read_table(path, filesystem=fs, columns=["id", "source", "task"])
    wanted = spec.select.samples or {}
    keys: dict[str, list[int]] = {}
    for i, source, task in zip(*(table.column(c).to_pylist() for c in ("id", "source", "task")),
                               strict=True):
        if source in wanted and selected(spec.select, source, task):
            keys.setdefault(source, []).append(row_seed(spec.seed, i))
    return keys


def sample_thresholds(spec: RewriteSpec, units: list[Unit]
                      ) -> tuple[dict[str, int | None], dict[str, dict[str, int]]]:
    """Per source of ``select.samples``: the largest key that is taken (None: every row),
    and a report (asked, eligible, taken) for the manifest. Reads the inputs' id, source
    and task columns once, on the driver (threads over the shard files)."""
    wanted = spec.select.samples or {}
    pools: dict[str, list[int]] = {s: [] for s in wanted}
    with ThreadPoolExecutor(max_workers=16) as pool:
        for keys in pool.map(lambda u: _keys(u.params["file"], spec), units):
            for source, values in keys.items():
                pools[source].extend(values)
    thresholds: dict[str, int | None] = {}
    report = {}
    for source, n in wanted.items():
        keys = pools[source]
        thresholds[source] = None if n >= len(keys) else (
            heapq.nsmallest(n, keys)[-1] if n else -1)
        report[source] = {"asked": n, "eligible": len(keys), "taken": min(n, len(keys))}
    return thresholds, report


def check_selection(spec: RewriteSpec) -> None:
    """A selected source or task that no input holds is a spec error, not a job that
    "succeeds" with every row rejected as not_selected (counts from the inputs' manifests)."""
    present: dict[str, set[str]] = {"source": set(), "task": set()}
    for root in spec.inputs:
        manifest = Dataset(root, spec.storage).read_manifest() or {}
        counts = manifest.get("totals", {}).get("counts", {})
        if not counts:
            return  # an input without counts (older layout): nothing to check against
        for column in present:
            present[column].update(counts.get(column, {}))
    wanted = {"select.sources": ("source", spec.select.sources),
              "select.tasks": ("task", spec.select.tasks),
              "select.samples": ("source", list(spec.select.samples or {}))}
    errors = [f"{field}: {name!r} is in none of the inputs; they hold "
              f"{sorted(present[column])}"
              for field, (column, names) in wanted.items() for name in names or ()
              if name not in present[column]]
    if errors:
        raise ValueError("; ".join(errors))


def plan_rewrite(spec: RewriteSpec) -> ShardPlan:
    units = [Unit(u.key, {"file": u.params["file"], "storage": u.params["storage"]})
             for u in input_units(spec.inputs, spec.storage)]
    check_selection(spec)
    recorded = spec.model_dump(mode="json")
    digest = rewrite_hash(spec)
    thresholds: dict[str, int | None] | None = None
    if spec.select.samples:
        thresholds, recorded["selection"] = sample_thresholds(spec, units)
        # the thresholds depend on the inputs: other inputs, other shard names
        picked = json.dumps(thresholds, sort_keys=True)
        digest = hashlib.sha256(f"{digest}:{picked}".encode()).hexdigest()[:10]
    e = spec.engine
    loader = ImageLoader(storage=spec.storage, max_pixels=spec.images.max_pixels,
                         max_bytes=spec.images.max_bytes, timeout_s=spec.images.timeout_s,
                         allowed_hosts=tuple(spec.images.allowed_hosts))
    steps = [
        StepDef("prepare_rows", prepare_rows,
                ("id", "source", "task", "conversations", "boxes", "image_bytes", "extra_images"),
                PREPARED,
                Resources(batch_size=4096),
                {"select": spec.select, "draft_boxes": spec.draft_boxes, "seed": spec.seed,
                 "thresholds": thresholds}),
    ]
    ray_stage = None
    if engines.get(e.kind).dataset_stage:  # vllm: ray.data.llm over the dataset
        from pf_ray.rewrite.vllm import OUTPUTS, RewriteOnVLLM, read_images

        # named as the actor pool's step, so an unreadable image is the same reject
        steps.append(StepDef(Rewrite.name, read_images,
                             ("id", "image", "image_bytes", "extra_images"), OUTPUTS,
                             Resources(batch_size=256, num_cpus=1.0),
                             {"loader": loader, "fetch_threads": spec.images.fetch_threads}))
        ray_stage = RewriteOnVLLM(spec)
    else:
        steps.append(StepDef(
            Rewrite.name, Rewrite, Rewrite.inputs, Rewrite.outputs,
            # micro-batches of LENGTH_BUCKETS engine batches, sorted by length inside
            e.resources(batch_size=e.batch_size * LENGTH_BUCKETS),
            {"engine_factory": engine_factory(spec), "checks": spec.checks,
             "loader": loader, "fetch_threads": spec.images.fetch_threads,
             "needs_bytes": engines.get(e.kind).needs_bytes,
             "engine_batch": e.batch_size}))
    return ShardPlan(kind="rewrite", spec_hash=digest, spec=recorded, units=units,
                     reader=read_samples,
                     output=spec.output, storage=spec.storage, steps=steps, schema=REWRITE_OUTPUT,
                     faults=spec.faults, ray_stage=ray_stage)
