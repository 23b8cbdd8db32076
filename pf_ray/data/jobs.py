"""Dataset jobs built from specs: ``kind: synthetic`` and ``kind: ingest``."""

from __future__ import annotations

from typing import Any

from pf_ray.config import ImagePolicy, IngestJob, StorageConfig, SyntheticJob, spec_hash
from pf_ray.data.images import ImageError, ImageLoader, encode_png
from pf_ray.data.shard_job import ShardJob, Unit, safe_key
from pf_ray.data.sources import SourceReader, expand_paths
from pf_ray.data.sources.base import file_slug
from pf_ray.data.synthetic import generate
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch, Resources, StepDef


def synthetic_job(spec: SyntheticJob) -> ShardJob:
    """Units are row ranges ``[start, stop)`` of ``rows_per_shard`` rows."""
    n, per = spec.n, spec.rows_per_shard
    width = max(5, len(str(n // per)))
    units = [Unit(f"synthetic-s{spec.seed}-{i // per:0{width}d}",
                  {"seed": spec.seed, "start": i, "stop": min(n, i + per),
                   "image_size": spec.image_size, "embed_images": spec.embed_images})
             for i in range(0, n, per)]
    return ShardJob(kind="synthetic", spec_hash=spec_hash(spec),
                    spec=spec.model_dump(mode="json"), units=units, reader=generate,
                    output=spec.output, storage=spec.storage)


class CheckImages:
    """Decode each row's image; reject unreadable ones with the loader's reason.

    With ``embed`` the decoded RGB image is stored, PNG-encoded, in ``image_bytes``.
    """

    name = "check_images"
    inputs = ("id", "image", "image_bytes")
    outputs = ("image_bytes",)
    resources = Resources(num_cpus=1, batch_size=64, min_actors=1, max_actors=4)

    def __init__(self, loader: ImageLoader, embed: bool = False):
        self.loader, self.embed = loader, embed

    def __call__(self, batch: Batch) -> Batch:
        out_bytes, reasons, details = [], [], []
        for ref, data in zip(batch["image"], batch["image_bytes"], strict=True):
            kept, reason, detail = data, None, None
            if ref is not None or data is not None:
                try:
                    img = self.loader.load(ref, data)
                    if self.embed and data is None:
                        kept = encode_png(img)
                except ImageError as exc:
                    reason, detail = exc.reason, exc.detail
            out_bytes.append(kept)
            reasons.append(reason)
            details.append(detail)
        return {"image_bytes": out_bytes, REJECT_REASON: reasons, REJECT_DETAIL: details}


def check_images_step(policy: ImagePolicy, storage: StorageConfig,
                      image_root: str | None = None) -> StepDef:
    """The CheckImages step configured from a spec's ``images`` block."""
    loader = ImageLoader(image_root=image_root, storage=storage, max_pixels=policy.max_pixels,
                         allowed_hosts=tuple(policy.allowed_hosts))
    return StepDef(CheckImages.name, CheckImages, CheckImages.inputs, CheckImages.outputs,
                   CheckImages.resources, {"loader": loader, "embed": policy.embed})


def ingest_job(spec: IngestJob) -> ShardJob:
    """Units are slices of ``rows_per_shard`` records of each matched file."""
    src = spec.source
    name = src.name or src.adapter
    reader = SourceReader(src.adapter, name, src.image_root, spec.storage)
    files = expand_paths(src.path, spec.storage)
    if not files:
        raise FileNotFoundError(f"source.path: no file matches {src.path!r}")
    units: list[Unit] = []
    for f in files:
        count = reader.count(f)
        for k, start in enumerate(range(0, max(count, 1), spec.rows_per_shard)):
            units.append(Unit(safe_key(f"{name}-{file_slug(f)}-{k:05d}"),
                              {"file": f, "start": start, "stop": start + spec.rows_per_shard}))
    steps: list[StepDef] = []
    if spec.images.check or spec.images.embed:
        steps.append(check_images_step(spec.images, spec.storage, src.image_root))
    return ShardJob(kind="ingest", spec_hash=spec_hash(spec), spec=spec.model_dump(mode="json"),
                    units=units, reader=_SourceRead(reader), output=spec.output,
                    storage=spec.storage, steps=steps)


class _SourceRead:
    """Picklable reader callable for a source (``reader(file, start, stop)``)."""

    def __init__(self, reader: SourceReader):
        self.reader = reader

    def __call__(self, **params: Any) -> Batch:
        return self.reader.read(params["file"], params["start"], params["stop"])
