"""The image check shared by every stage that reads images (ingest, distort, rewrite)."""

from __future__ import annotations

from pf_ray.data.images import ImageError, ImageLoader, batch_images, encode_png
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.specs import ImagePolicy, StorageConfig
from pf_ray.steps.base import Resources, StepDef


class CheckImages:
    """Decode every image of each row (``image`` and ``extra_images``); a row with one that
    cannot be used is rejected with the loader's reason (naming which image).

    With ``embed`` each decoded RGB image is stored, PNG-encoded, in its ``image_bytes``.
    """

    name = "check_images"
    inputs = ("id", "image", "image_bytes", "extra_images")
    outputs = ("image_bytes", "extra_images")
    resources = Resources(num_cpus=1, batch_size=64, min_actors=1, max_actors=4)

    def __init__(self, loader: ImageLoader, embed: bool = False):
        self.loader, self.embed = loader, embed

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {"image_bytes": list(batch["image_bytes"]),
                      "extra_images": list(batch["extra_images"]),
                      REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}
        for i in range(n):
            slots = batch_images(batch, i)
            try:
                decoded = self.loader.load_images(slots)
            except ImageError as exc:
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = exc.reason, exc.detail
                continue
            if not self.embed:
                continue
            stored = [data if data is not None else encode_png(img)
                      for (_, data), (img, _) in zip(slots, decoded, strict=True)]
            out["image_bytes"][i] = stored[0] if stored else None
            if len(stored) > 1:
                out["extra_images"][i] = [{"image": ref, "image_bytes": data} for (ref, _), data
                                          in zip(slots[1:], stored[1:], strict=True)]
        return out


def check_images_step(policy: ImagePolicy, storage: StorageConfig,
                      image_root: str | None = None) -> StepDef:
    """The CheckImages step configured from a spec's ``images`` block."""
    loader = ImageLoader(image_root=image_root, storage=storage, max_pixels=policy.max_pixels,
                         allowed_hosts=tuple(policy.allowed_hosts),
                         max_bytes=policy.max_bytes, timeout_s=policy.timeout_s)
    return StepDef(CheckImages.name, CheckImages, CheckImages.inputs, CheckImages.outputs,
                   CheckImages.resources, {"loader": loader, "embed": policy.embed})
