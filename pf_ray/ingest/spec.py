"""Specs of ``kind: synthetic`` and ``kind: ingest``."""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pf_ray.specs import ImagePolicy, OutputConfig, SpecBase, Strict


class SyntheticSpec(SpecBase):
    """The offline default dataset: procedural shapes with known ground truth."""

    kind: Literal["synthetic"]
    output: OutputConfig
    seed: int = 0
    n: int = Field(2000, ge=1, description="number of rows (samples), all tasks together")
    image_size: int = Field(64, ge=16, le=1024, description="square image side in pixels")
    rows_per_shard: int = Field(1000, ge=1)
    embed_images: bool = Field(True, description="store PNG bytes in image_bytes")


SourceAdapter = Literal["llava_instruct", "sharegpt", "ultrachat", "coco", "oasst1", "alpaca_gpt4",
                        "gpteacher", "instructionwild",
                        # raw vision-language annotations for the rewrite stage (spec §4)
                        "vqav2", "gqa", "aokvqa", "textvqa", "textcaps", "coco_captions",
                        "flickr30k", "clevr", "scienceqa", "image_paragraph", "webdataset",
                        "image_folder_classes", "refcocog"]


class SourceConfig(Strict):
    """A public dataset file in its own format."""

    adapter: SourceAdapter
    path: str | Annotated[list[str], Field(min_length=1)] = Field(
        ..., description="file, glob or URI (s3://bucket/x.json), or a list of them")
    image_root: str | None = Field(None, description="folder or URI image paths are relative to")
    name: str | None = Field(None, description="source name used in ids (default: adapter name)")
    # Left out of dumps when unset, so spec hashes (shard names) of datasets ingested before
    # this field existed stay the same and their jobs still resume.
    image_pattern: str | None = Field(
        None, exclude_if=lambda v: v is None, description="str.format pattern of the image path under image_root, for "
        "adapters that name images from ids (vqav2: '{split}/COCO_{split}_{image_id:012d}.jpg')")

    @model_validator(mode="after")
    def _pattern_fields(self) -> SourceConfig:
        if self.image_pattern is None:
            return self
        from pf_ray.data.sources.base import IMAGE_PATTERN_FIELDS, get_adapter

        get_adapter(self.adapter)  # registers the adapters' pattern fields
        allowed = IMAGE_PATTERN_FIELDS.get(self.adapter)
        if allowed is None:
            raise ValueError(f"image_pattern: adapter {self.adapter!r} takes its image paths "
                             "from the records; only "
                             f"{sorted(IMAGE_PATTERN_FIELDS)} accept a pattern")
        try:
            used = {re.split(r"[.\[]", f)[0] for _, f, _, _ in string.Formatter().parse(
                self.image_pattern) if f is not None}
        except ValueError as exc:
            raise ValueError(f"image_pattern: received {self.image_pattern!r}: {exc}") from exc
        unknown = sorted(used - set(allowed))
        if unknown or "" in used:
            raise ValueError(f"image_pattern: received {self.image_pattern!r} with field(s) "
                             f"{unknown or ['{}']}; allowed for {self.adapter}: {list(allowed)}")
        return self


class IngestSpec(SpecBase):
    """Convert a public instruction dataset into pf-ray sample shards."""

    kind: Literal["ingest"]
    output: OutputConfig
    source: SourceConfig
    rows_per_shard: int = Field(5000, ge=1)
    max_chars: int = Field(20_000, ge=1, description="rows with a longer turn are rejected "
                                                     "(reason text_too_long)")
    images: ImagePolicy = Field(default_factory=ImagePolicy)
