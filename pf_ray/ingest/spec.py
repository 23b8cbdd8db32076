"""Specs of ``kind: synthetic`` and ``kind: ingest``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

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
                        "gpteacher", "instructionwild"]


class SourceConfig(Strict):
    """A public dataset file in its own format."""

    adapter: SourceAdapter
    path: str | Annotated[list[str], Field(min_length=1)] = Field(
        ..., description="file, glob or URI (s3://bucket/x.json), or a list of them")
    image_root: str | None = Field(None, description="folder or URI image paths are relative to")
    name: str | None = Field(None, description="source name used in ids (default: adapter name)")


class IngestSpec(SpecBase):
    """Convert a public instruction dataset into pf-ray sample shards."""

    kind: Literal["ingest"]
    output: OutputConfig
    source: SourceConfig
    rows_per_shard: int = Field(5000, ge=1)
    max_chars: int = Field(20_000, ge=1, description="rows with a longer turn are rejected "
                                                     "(reason text_too_long)")
    images: ImagePolicy = Field(default_factory=ImagePolicy)
