"""The spec of ``kind: distort``: which rows, which families, which engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.data.select import SelectConfig
from pf_ray.engines.config import EngineConfig
from pf_ray.specs import ImagePolicy, OutputConfig, SpecBase, Strict

Family = Literal["llm", "augment", "boxes"]


class MixtureConfig(Strict):
    """Distortion family weights per kind of row (normalised; paper.md §1 ratios by default).

    Ratios only: every selected pair gets a family, so at paper scale all UltraChat and
    ShareGPT pairs would be LLM-distorted. ``targets`` (below) give exact counts instead.

    A row is ``text`` (no image), ``image``, or ``image_with_boxes`` (captions + boxes are
    known for its image, e.g. LLaVA-detail joined with COCO). ``per_source`` replaces the
    weights for the rows of one source. ``boxes`` is drawn only where captions and boxes
    exist, and ``llm`` only when an engine is configured; the others are renormalised.
    """

    # 76k LLM-instructed UltraChat/ShareGPT, no other family on text-only rows.
    text: dict[Family, float] = Field(default_factory=lambda: {"llm": 1.0})
    # 133k LLM-instructed vs 77k nlpaug-augmented LLaVA rows.
    image: dict[Family, float] = Field(default_factory=lambda: {"llm": 133.0, "augment": 77.0})
    # 14k of LLaVA-detail's 23k use captions+boxes; the other 9k split 133:77 (5.7 : 3.3).
    image_with_boxes: dict[Family, float] = Field(
        default_factory=lambda: {"boxes": 14.0, "llm": 5.7, "augment": 3.3})
    per_source: dict[str, dict[Family, float]] = Field(default_factory=dict)

    @field_validator("text", "image", "image_with_boxes")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError(f"weights must be >= 0 with at least one > 0, received {v}")
        return v


class Target(Strict):
    """Exactly ``pairs`` pairs of one family, drawn (seeded) from the pairs of some sources.

    Targets are filled in the order listed: each takes the ``pairs`` lowest-ranked pairs
    (seeded hash of the pair id) of its pool that no earlier target took, so list narrow
    pools first (captions+boxes from LLaVA-detail before the LLM family of all LLaVA).
    """

    family: Family
    sources: list[str] = Field(..., min_length=1, description="pool: pairs of these sources")
    tasks: list[str] | None = Field(None, description="None: every task of the sources")
    pairs: int = Field(..., ge=0, description="exact number of pairs to make")
    name: str | None = Field(None, description="label in spec.selection and reject details; "
                             "default family:sources[:tasks]")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.family, "+".join(self.sources)] + (
            ["+".join(self.tasks)] if self.tasks else [])
        return ":".join(parts)


class DistortSpec(SpecBase):
    """Clean instruction data -> (distorted, original) pairs for the rewriter."""

    kind: Literal["distort"]
    inputs: list[str] = Field(..., min_length=1, description="pf-ray dataset roots")
    output: OutputConfig
    seed: int = 0
    select: SelectConfig = Field(default_factory=SelectConfig)
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)
    engine: EngineConfig | None = Field(None, description="None: no LLM family")
    boxes_from: str | None = Field(
        None, description="dataset with captions+boxes rows (COCO ingest) joined on image")
    max_chars: int = Field(8000, ge=1, description="longer originals are rejected")
    images: ImagePolicy = Field(default_factory=lambda: ImagePolicy(check=True))
    pairs_per_conversation: Literal["every_turn", "one_turn"] = Field(
        "every_turn", description="every_turn: one pair per assistant turn (the paper's "
        "224k LLaVA pairs), id <sample id>#t<turn>; one_turn: one seeded turn per sample")
    targets: list[Target] | None = Field(
        None, max_length=64, description="exact pair counts per family and sources "
        "(replaces mixture); pairs outside every target are rejected as not_selected")
    llm_reject_longer: bool = Field(
        False, description="reject LLM outputs longer than the original (llm_longer); off: "
        "the paper's styles (verbosity, repetition...) lengthen text on purpose")

    @model_validator(mode="after")
    def _targets_fit(self) -> DistortSpec:
        if self.targets is None:
            return self
        if "mixture" in self.model_fields_set:
            raise ValueError("give either mixture (family weights) or targets (exact counts), "
                             "not both")
        labels = [t.label for t in self.targets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"targets: labels must be unique, received {labels}")
        for k, t in enumerate(self.targets):
            if t.family == "llm" and self.engine is None:
                raise ValueError(f"targets.{k} ({t.label}): the llm family needs an engine")
            if t.family == "boxes" and self.boxes_from is None:
                raise ValueError(f"targets.{k} ({t.label}): the boxes family needs boxes_from")
        return self
