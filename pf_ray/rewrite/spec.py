"""The spec of ``kind: rewrite``: which rows, which engine, which decoding, which checks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.data.select import SelectConfig
from pf_ray.engines.config import DecodingConfig, HTTPEndpoint
from pf_ray.specs import ImageLimits, OutputConfig, SpecBase, Strict
from pf_ray.steps.pool import ActorPool

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
    """Output checks (spec §4 failure modes); a failing output is a reject with the reason.

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


class FlamingoEngineConfig(ActorPool):
    """pf-ray's Flamingo model (a ``pf-ray convert`` / training export folder) in an actor
    pool, batched generation (each distinct image encoded once per batch)."""

    kind: Literal["flamingo"]
    model: str = Field(..., description="model folder or URI (s3://...): config.json, "
                       "model.safetensors, adapter/, tokenizer/")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if the "
                                                   "actor sees a GPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the model config's dtype")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per actor")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="longer prompts are rejected (prompt_too_long); None: the "
        "language model's max_position_embeddings minus max_new_tokens")


class HTTPRewriteEngineConfig(ActorPool, HTTPEndpoint):
    """An OpenAI-compatible server: ``completions`` sends the rewriter prompt text with its
    ``<image>`` markers and the images as data URIs in ``images`` (pf-ray's Serve app);
    ``chat`` sends a user message of image_url + text parts (generic VLM servers, vLLM)."""

    kind: Literal["http"]
    api: Literal["completions", "chat"] = "completions"
    image_markers: Literal["next_image", "previous_image"] = Field(
        "next_image", description="completions: where the prompt's <image> marker goes (the "
        "model's cross-attention mask; released v1 models: next_image)")
    chat_prompt: str = Field(DEFAULT_CHAT_PROMPT, description="chat: the user text, with "
                             "{instruction} and {draft}")

    @field_validator("chat_prompt")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        missing = [p for p in ("{instruction}", "{draft}") if p not in v]
        if missing:
            raise ValueError(f"must contain {' and '.join(missing)}, received {v[:80]!r}")
        return v


RewriteEngineConfig = Annotated[FlamingoEngineConfig | HTTPRewriteEngineConfig,
                                Field(discriminator="kind")]


class RewriteSpec(SpecBase):
    """Raw vision-language annotations -> rewrites by the rewriter (Polite Flamingo)."""

    kind: Literal["rewrite"]
    inputs: list[str] = Field(..., min_length=1, description="pf-ray sample dataset roots "
                              "(ingest or synthetic outputs)")
    output: OutputConfig
    select: RewriteSelect = Field(default_factory=RewriteSelect)
    seed: int = Field(0, description="seeds select.samples")
    engine: RewriteEngineConfig
    prompt_format: Literal["paper", "released"] = Field(
        "paper", description="the rewriter prompt the model was trained with: paper (Fig. 3) "
        "or released (the released weights' README prompt)")
    draft_boxes: bool = Field(True, description="rows with boxes: the draft is the annotation "
                              "plus the serialised boxes (spec §4: captions plus boxes)")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    images: ImageLimits = Field(default_factory=ImageLimits)

    @model_validator(mode="after")
    def _engine_decoding(self) -> RewriteSpec:
        if self.engine.kind == "http" and self.decoding.num_beams > 1:
            raise ValueError(f"decoding.num_beams: received {self.decoding.num_beams}; the "
                             "http engine allows 1 (beam search needs the flamingo engine)")
        return self
