"""The ingest step that draws a row's region onto its image (``meta.draw``, see
:mod:`pf_ray.data.draw`): RefCOCOg's green box, PointQA's arrow.

The drawn image is what the rewriter and the tuned model must see, so it is stored as PNG
in ``image_bytes`` (the ``image`` reference keeps pointing at the source image). Rows
without a ``draw`` entry pass unchanged; an unreadable image or a bad region is a reject.
"""

from __future__ import annotations

import json

from pf_ray.data.draw import DRAW_KEY, RegionError, parse_region, render
from pf_ray.data.images import ImageError, ImageLoader, encode_png
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.specs import ImagePolicy, StorageConfig
from pf_ray.steps.base import Resources, StepDef


class RenderRegions:
    """Load each asking row's image, draw its region, store the PNG in ``image_bytes``."""

    name = "draw_regions"
    inputs = ("id", "image", "image_bytes", "meta")
    outputs = ("image_bytes",)
    resources = Resources(num_cpus=1, batch_size=64, min_actors=1, max_actors=4)

    def __init__(self, loader: ImageLoader):
        self.loader = loader

    def __call__(self, batch: Batch) -> Batch:
        out, reasons, details = [], [], []
        for ref, data, meta in zip(batch["image"], batch["image_bytes"], batch["meta"],
                                   strict=True):
            kept, reason, detail = data, None, None
            request = json.loads(meta).get(DRAW_KEY) if meta else None
            if request is not None:
                try:
                    region = parse_region(request)
                    kept = encode_png(render(self.loader.load(ref, data), region))
                except ImageError as exc:
                    reason, detail = exc.reason, exc.detail
                except RegionError as exc:
                    reason, detail = "bad_region", str(exc)
            out.append(kept)
            reasons.append(reason)
            details.append(detail)
        return {"image_bytes": out, REJECT_REASON: reasons, REJECT_DETAIL: details}


def draw_regions_step(policy: ImagePolicy, storage: StorageConfig,
                      image_root: str | None = None) -> StepDef:
    """The RenderRegions step, loading images under the spec's ``images`` policy."""
    loader = ImageLoader(image_root=image_root, storage=storage, max_pixels=policy.max_pixels,
                         allowed_hosts=tuple(policy.allowed_hosts),
                         max_bytes=policy.max_bytes, timeout_s=policy.timeout_s)
    return StepDef(RenderRegions.name, RenderRegions, RenderRegions.inputs,
                   RenderRegions.outputs, RenderRegions.resources, {"loader": loader})
