"""Shard plans of ``kind: synthetic`` and ``kind: ingest``."""

from __future__ import annotations

from typing import Any

from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.data.sources import SourceReader, expand_paths, get_adapter
from pf_ray.data.sources.files import file_slug
from pf_ray.data.synthetic import generate
from pf_ray.ingest.draw import draw_regions_step
from pf_ray.ingest.spec import IngestSpec, SyntheticSpec
from pf_ray.jobs.shard import ShardPlan, Unit, safe_key
from pf_ray.specs import spec_hash
from pf_ray.steps.base import Resources, StepDef
from pf_ray.steps.images import check_images_step


def plan_synthetic(spec: SyntheticSpec) -> ShardPlan:
    """Units are row ranges ``[start, stop)`` of ``rows_per_shard`` rows."""
    n, per = spec.n, spec.rows_per_shard
    width = max(5, len(str(n // per)))
    units = [Unit(f"synthetic-s{spec.seed}-{i // per:0{width}d}",
                  {"seed": spec.seed, "start": i, "stop": min(n, i + per),
                   "image_size": spec.image_size, "embed_images": spec.embed_images})
             for i in range(0, n, per)]
    return ShardPlan(kind="synthetic", spec_hash=spec_hash(spec),
                     spec=spec.model_dump(mode="json"), units=units, reader=generate,
                     output=spec.output, storage=spec.storage, faults=spec.faults)


def plan_ingest(spec: IngestSpec) -> ShardPlan:
    """Units are slices of ``rows_per_shard`` records of each matched file."""
    src = spec.source
    name = src.name or src.adapter
    reader = SourceReader(src.adapter, name, src.image_root, spec.storage, src.image_pattern)
    files = expand_paths(src.path, spec.storage)
    if not files:
        raise FileNotFoundError(f"source.path: no file matches {src.path!r}")
    units: list[Unit] = []
    for f in files:
        count = reader.count(f)
        for k, start in enumerate(range(0, max(count, 1), spec.rows_per_shard)):
            units.append(Unit(safe_key(f"{name}-{file_slug(f)}-{k:05d}"),
                              {"file": f, "start": start, "stop": start + spec.rows_per_shard}))
    steps = [StepDef("check_text", check_text, ("id", "conversations"), (),
                     Resources(batch_size=1024), {"max_chars": spec.max_chars})]
    if get_adapter(src.adapter).draws:  # rows ask for a region drawn on their image (meta.draw)
        steps.append(draw_regions_step(spec.images, spec.storage, src.image_root))
    if spec.images.check or spec.images.embed:
        steps.append(check_images_step(spec.images, spec.storage, src.image_root))
    return ShardPlan(kind="ingest", spec_hash=spec_hash(spec),
                     spec=spec.model_dump(mode="json"), units=units, reader=_SourceRead(reader),
                     output=spec.output, storage=spec.storage, steps=steps, faults=spec.faults)


def check_text(batch: Batch, *, max_chars: int) -> Batch:
    """Reject rows with a turn longer than ``max_chars`` (reason ``text_too_long``)."""
    reasons: list[str | None] = []
    details: list[str | None] = []
    for turns in batch["conversations"]:
        longest = max(((len(t["content"] or ""), k) for k, t in enumerate(turns or [])),
                      default=(0, -1))
        too_long = longest[0] > max_chars
        reasons.append("text_too_long" if too_long else None)
        details.append(f"turn {longest[1]} has {longest[0]} characters > max_chars "
                       f"{max_chars}" if too_long else None)
    return {REJECT_REASON: reasons, REJECT_DETAIL: details}


class _SourceRead:
    """Picklable reader callable for a source (``reader(file, start, stop)``)."""

    def __init__(self, reader: SourceReader):
        self.reader = reader

    def __call__(self, **params: Any) -> Batch:
        return self.reader.read(params["file"], params["start"], params["stop"])
