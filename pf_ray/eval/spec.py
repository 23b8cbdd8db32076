"""The spec of ``kind: eval``: eval sets, answer sources, and how answers are scored.

* ``sets``: rows of pf-ray sample datasets (ingest outputs) as (images, question,
  references; a row's images are ``image`` and then ``extra_images``), each set with its
  metric and sample size (paper.md §7: COCO 5k; TextCaps, Img2P, OK-VQA, Grid3D, NLVR2 3k;
  the rest their full validation sets).
* ``sources``: who answers, each under a name (a row of the tables): an exported pf-ray
  model (``model``: chat prompt, or the rewriter prompt with the raw annotation as draft),
  any OpenAI-compatible endpoint (``http``: chat completions with image_url parts), or
  answers read from a dataset column (``dataset``: raw annotations, PF rewrites).
* ``politeness``: a reward model scores (question, answer); pairwise win rates between
  all sources on the same items, median reward per source and set.
* ``understanding``: the scorers of the sets' metrics (NLI judge, STS model).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from pf_ray.engines.config import DecodingConfig, FlamingoModelFields, HTTPEndpoint
from pf_ray.model.hf_vlm.family import Family, split_model_field
from pf_ray.scorers.config import ScorerPool
from pf_ray.scorers.nli import NLI_LABELS
from pf_ray.specs import ImageLimits, OutputConfig, QATemplate, SpecBase, Strict
from pf_ray.steps.pool import ActorPool

Metric = Literal["rouge_l", "nli", "sts", "answer_match", "none"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _check_name(v: str) -> str:
    if not _NAME.fullmatch(v):
        raise ValueError(f"must be letters, digits, '_', '.', '+' or '-' (a table label), "
                         f"received {v!r}")
    return v


Name = Annotated[str, AfterValidator(_check_name)]


class EvalSet(Strict):
    """One eval set: rows of a pf-ray sample dataset, their metric and sample size.

    Question: the first user turn (image markers removed). References: ``meta.captions``,
    else ``meta.answers`` (unique), else ``meta.answer`` / ``paragraph`` / ``caption``,
    else the first assistant turn (the raw annotation).
    """

    name: Name = Field(..., description="the set's label in the tables (e.g. COCO, OK-VQA)")
    path: str = Field(..., description="pf-ray sample dataset root (folder or s3:// URI)")
    sources: list[str] | None = Field(None, description="rows whose `source` is one of these "
                                      "(None: all)")
    tasks: list[str] | None = Field(None, description="rows whose `task` is one of these "
                                    "(None: all)")
    samples: int | None = Field(None, ge=1, description="rows drawn (lowest seeded hash of "
                                "their id, reproducible); None: every row")
    metric: Metric = Field("none", description="rouge_l (captioning), nli (VQA, NLI judge), "
                           "sts (change captioning: STS and ROUGE-L), answer_match (synthetic "
                           "ground truth), none (politeness only)")


class ModelSource(ActorPool, FlamingoModelFields):
    """An exported pf-ray model (``pf-ray convert`` / a training export), batched in an
    actor pool. ``prompt: chat`` asks the question (Clever Flamingo's chat format, as the
    Serve app does); ``prompt: rewrite`` gives the rewriter the question and the item's raw
    annotation as the draft (Polite Flamingo)."""

    kind: Literal["model"]
    name: Name
    model_family: Family = Field(
        "flamingo", description="set by model: {family: hf_vlm, path: ...}: an hf_vlm model "
        "(transformers image-text-to-text) answers through pf-ray's hf_vlm generator with "
        "the same prompts through its chat template")
    prompt: Literal["chat", "rewrite"] = "chat"
    prompt_format: Literal["paper", "released"] = Field(
        "paper", description="rewrite prompt: the format the rewriter was trained with")

    @model_validator(mode="before")
    @classmethod
    def _model_family(cls, data: Any) -> Any:
        return split_model_field(data)


class HTTPSource(ActorPool, HTTPEndpoint):
    """Any OpenAI-compatible server (pf-ray's Serve app, vLLM, a hosted API): one
    ``/chat/completions`` request per item, a user message of one image_url part (data
    URI) per image of the item, in the row's order, and the question."""

    kind: Literal["http"]
    name: Name
    system: str | None = Field(None, description="a system message to send (None: none; "
                               "the server's default applies)")


class DatasetSource(Strict):
    """Answers read from a dataset, joined to the items by id: ``path`` None reads the eval
    set's own rows (``column: original``: the raw annotation, the first assistant turn); a
    rewrite or PF-1M dataset gives ``output`` (the PF rewrite) or ``original``."""

    kind: Literal["dataset"]
    name: Name
    path: str | None = Field(None, description="rewrite / pf1m dataset root; None: the eval "
                             "set's rows themselves")
    column: Literal["original", "output"] = "original"

    @model_validator(mode="after")
    def _column(self) -> DatasetSource:
        if self.path is None and self.column != "original":
            raise ValueError(f"column: received {self.column!r} with path null; the eval "
                             "set's own rows only have 'original' (their raw annotation)")
        return self


Source = Annotated[ModelSource | HTTPSource | DatasetSource, Field(discriminator="kind")]


class RewardConfig(Strict):
    """Politeness (paper.md §7): a reward model's logit for (question, answer), as the PF-1M
    reward (OpenAssistant/reward-model-deberta-v3-large-v2)."""

    model: str = Field(..., description="reward model folder or URI (a transformers sequence "
                       "classifier with one logit + tokenizer)")
    max_length: int = Field(512, ge=8)
    tie_margin: float = Field(0.0, ge=0, description="|reward a - reward b| <= this is a tie; "
                              "a tie counts as half a win (the paper does not say)")
    pool: ScorerPool = Field(default_factory=ScorerPool)


class NLIJudge(Strict):
    """The NLI judge of VQA answers (paper.md §5's cross-encoder, template and label order):
    premise = template(answer), hypothesis = template(reference); correct when the argmax
    is ``entailment`` for at least one reference."""

    model: str | None = Field(None, description="cross-encoder folder or URI; required when "
                              "a set uses metric nli")
    template: QATemplate = '"{answer}" is the answer to the question: "{question}"'
    labels: list[str] = Field(default_factory=lambda: list(NLI_LABELS),
                              description="the model's label order (logit index -> label)")
    max_references: int = Field(10, ge=1, description="unique references judged per answer")
    max_length: int = Field(512, ge=8)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if "entailment" not in v or len(set(v)) != len(v):
            raise ValueError(f"must be distinct labels including 'entailment', received {v}")
        return v


class UnderstandingConfig(Strict):
    """The scorers of the sets' metrics; one actor pool loads those the sets use."""

    nli: NLIJudge = Field(default_factory=NLIJudge)
    sts_model: str | None = Field(None, description="sentence-transformers folder or URI; "
                                  "None: the packaged all-MiniLM-L6-v2 (the paper's Table 2 "
                                  "does not name its STS model)")
    rouge: Literal["rouge_score", "coco"] = Field(
        "rouge_score", description="ROUGE-L convention (pf_ray.metrics.rouge): rouge-score's "
        "best F over the references, or the COCO toolkit's")
    pool: ScorerPool = Field(default_factory=ScorerPool)


class EvalSpec(SpecBase):
    """Answer sources on the same eval items -> politeness and understanding tables."""

    kind: Literal["eval"]
    output: OutputConfig
    sets: list[EvalSet] = Field(..., min_length=1)
    sources: list[Source] = Field(..., min_length=1)
    seed: int = Field(0, description="seeds the per-set sampling (sets.N.samples)")
    decoding: DecodingConfig = Field(default_factory=lambda: DecodingConfig(max_new_tokens=256),
                                     description="decoding of model and http sources "
                                     "(greedy by default)")
    politeness: RewardConfig | None = Field(None, description="None: no reward scores")
    understanding: UnderstandingConfig = Field(default_factory=UnderstandingConfig)
    images: ImageLimits = Field(default_factory=ImageLimits)
    baseline: str | None = Field(None, description="a source name: the win-rate table's "
                                 "first column (None: the first source)")

    @model_validator(mode="after")
    def _consistent(self) -> EvalSpec:
        errors = []
        for field, names in (("sets", [s.name for s in self.sets]),
                             ("sources", [s.name for s in self.sources])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                errors.append(f"{field}: names must be unique, received {dup} more than once")
        names = [s.name for s in self.sources]
        if self.baseline is not None and self.baseline not in names:
            errors.append(f"baseline: received {self.baseline!r}; allowed: {names}")
        nli_sets = [s.name for s in self.sets if s.metric == "nli"]
        if nli_sets and self.understanding.nli.model is None:
            errors.append(f"understanding.nli.model: required, sets {nli_sets} use metric "
                          "nli (a cross-encoder folder or URI)")
        if self.politeness is None and all(s.metric == "none" for s in self.sets):
            errors.append("politeness: every set has metric none and politeness is null: "
                          "nothing would be scored")
        beams = [s.name for s in self.sources if s.kind == "http"]
        if beams and self.decoding.num_beams > 1:
            errors.append(f"decoding.num_beams: received {self.decoding.num_beams}; http "
                          f"sources {beams} allow 1")
        if errors:
            raise ValueError("; ".join(errors))
        return self
