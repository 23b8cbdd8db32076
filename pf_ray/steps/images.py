"""The image check shared by every stage that reads images (ingest, distort, rewrite)."""

from __future__ import annotations

from pf_ray.data.images import ImageError, ImageLoader, encode_png
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.specs import ImagePolicy, StorageConfig
from pf_ray.steps.base import Resources, StepDef


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
                         allowed_hosts=tuple(policy.allowed_hosts),
                         max_bytes=policy.max_bytes, timeout_s=policy.timeout_s)
    return StepDef(CheckImages.name, CheckImages, CheckImages.inputs, CheckImages.outputs,
                   CheckImages.resources, {"loader": loader, "embed": policy.embed})
