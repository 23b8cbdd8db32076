"""The spec of ``kind: rewrite``: which rows, which engine, which decoding, which checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.data.select import SelectConfig
from pf_ray.engines.config import DecodingConfig
from pf_ray.specs import ImageLimits, OutputConfig, SpecBase, Strict

# The user message of the ``chat`` api (generic VLM servers, which do not know the rewriter
# prompt): the image travels as an image_url part before this text.
DEFAULT_CHAT_PROMPT = (
    "Here is a request about the image and a draft response to it.\n"
    "Request: {instruction}\n"
    "Draft response: {draft}\n"
    "Rewrite the draft into a helpful, detailed and polite response to the request. Keep "
    "every fact of the draft and add nothing the image does not show. Reply with the "
    "revised response only.")


class RewriteSelect(SelectConfig):
    """Which input rows are rewritten (others are rejects with reason ``not_selected``)."""

    samples: dict[str, int] | None = Field(
        None, description="exact rows per source (e.g. the paper's Table 6 counts): the "
        "rows of the source with the lowest seeded hash of their id; sources not listed keep "
        "every row. Rows later rejected (bad rows, output checks) are not replaced")

    @field_validator("samples")
    @classmethod
    def _counts(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        bad = {k: n for k, n in (v or {}).items() if n < 0}
        if bad:
            raise ValueError(f"counts must be >= 0, received {bad}")
        return v


class ChecksConfig(Strict):
    """Output checks (paper.md §4 failure modes); a failing output is a reject with the reason.

    ``repetition_loop``: the output ends in a loop, the same span of 1 to
    ``loop_max_period`` words (punctuation marks count as words) repeated at least
    ``loop_min_repeats`` times, covering at least ``loop_min_words`` words.
    """

    empty_output: bool = Field(True, description="reject outputs with no text")
    missing_eos: bool = Field(True, description="reject outputs cut by max_new_tokens "
                              "(finish_reason length)")
    repetition_loop: bool = Field(True, description="reject outputs ending in a loop")
    ellipsis_ending: bool = Field(True, description="reject outputs ending in '...' (the "
                                  "released converter drops them)")
    loop_min_repeats: int = Field(3, ge=2)
    loop_max_period: int = Field(32, ge=1)
    loop_min_words: int = Field(8, ge=2)


class RewriteSpecBase(SpecBase):
    """Raw vision-language annotations -> rewrites by the rewriter (Polite Flamingo).

    ``engine`` is one of the registered engines (:mod:`pf_ray.engines.registry`), added by
    :func:`build_rewrite_spec`.
    """

    kind: Literal["rewrite"]
    inputs: list[str] = Field(..., min_length=1, description="pf-ray sample dataset roots "
                              "(ingest or synthetic outputs)")
    output: OutputConfig
    select: RewriteSelect = Field(default_factory=RewriteSelect)
    seed: int = Field(0, description="seeds select.samples")
    prompt_format: Literal["paper", "released"] = Field(
        "paper", description="the rewriter prompt the model was trained with: paper (Fig. 3) "
        "or released (the released weights' README prompt)")
    chat_prompt: str = Field(DEFAULT_CHAT_PROMPT, description="chat APIs (engine http, api "
                             "chat): the user text, with {instruction} and {draft}")
    draft_boxes: bool = Field(True, description="rows with boxes: the draft is the annotation "
                              "plus the serialised boxes (paper.md §4: captions plus boxes)")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    images: ImageLimits = Field(default_factory=ImageLimits)

    @field_validator("chat_prompt")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        missing = [p for p in ("{instruction}", "{draft}") if p not in v]
        if missing:
            raise ValueError(f"must contain {' and '.join(missing)}, received {v[:80]!r}")
        return v

    @model_validator(mode="after")
    def _engine_decoding(self) -> RewriteSpecBase:
        from pf_ray.engines.registry import engines

        engine = getattr(self, "engine")  # noqa: B009 - added by build_rewrite_spec
        if self.decoding.num_beams > 1 and not engines()[engine.kind].beams:
            beams = [k for k, e in engines().items() if e.beams]
            raise ValueError(f"decoding.num_beams: received {self.decoding.num_beams}; the "
                             f"{engine.kind} engine allows 1 (beam search needs one of the "
                             f"engines {beams})")
        return self


def build_rewrite_spec() -> type[RewriteSpecBase]:
    """The ``rewrite`` spec class for the engines registered now."""
    from pydantic import create_model

    from pf_ray.engines.registry import engine_union

    return create_model("RewriteSpec", __base__=RewriteSpecBase,
                        __doc__=RewriteSpecBase.__doc__,
                        engine=(engine_union(), Field(..., description="the engine that "
                                                      "rewrites: its kind and settings")))


RewriteSpec = build_rewrite_spec()
