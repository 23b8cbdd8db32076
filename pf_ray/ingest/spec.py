"""Specs of ``kind: synthetic`` and ``kind: ingest``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

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


def _adapter_enum(schema: dict[str, Any]) -> None:
    """The JSON schema of ``source.adapter`` lists the adapters registered when it is made."""
    from pf_ray.data.sources.registry import adapter_names

    schema["enum"] = list(adapter_names())


class SourceConfig(Strict):
    """A public dataset file in its own format."""

    # The adapters are the registry's (pf_ray.data.sources.registry), checked when a spec
    # is parsed rather than frozen into a Literal here, so a new adapter is one module.
    adapter: str = Field(..., description="source adapter: the dataset format (see "
                         "`pf_ray.data.sources`)", json_schema_extra=_adapter_enum)
    path: str | Annotated[list[str], Field(min_length=1)] = Field(
        ..., description="file, glob or URI (s3://bucket/x.json), or a list of them")
    image_root: str | None = Field(None, description="folder or URI image paths are relative to")
    name: str | None = Field(None, description="source name used in ids (default: adapter name)")
    # Left out of dumps when unset, so spec hashes (shard names) of datasets ingested before
    # this field existed stay the same and their jobs still resume.
    image_pattern: str | None = Field(
        None, exclude_if=lambda v: v is None, description="str.format pattern of the image path under image_root, for "
        "adapters that name images from ids (vqav2: '{split}/COCO_{split}_{image_id:012d}.jpg')")

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        from pf_ray.data.sources.registry import adapter_names

        names = adapter_names()
        if value not in names:
            raise ValueError(f"received {value!r}; allowed: {', '.join(map(repr, names))}")
        return value

    @model_validator(mode="after")
    def _pattern_fields(self) -> SourceConfig:
        if self.image_pattern is None:
            return self
        from pf_ray.data.sources.fields import pattern_names
        from pf_ray.data.sources.registry import pattern_fields

        patterned = pattern_fields()
        allowed = patterned.get(self.adapter)
        if allowed is None:
            raise ValueError(f"image_pattern: adapter {self.adapter!r} takes its image paths "
                             f"from the records; only {sorted(patterned)} accept a pattern")
        try:
            used = pattern_names(self.image_pattern)
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
