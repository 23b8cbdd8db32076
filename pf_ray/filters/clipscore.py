"""Per-paragraph CLIPScore filter (captions, paper.md §5.3), only for outputs with a blank line.

Each paragraph of an output split on '\\n\\n' is scored by the CLIP scorer
(:class:`pf_ray.scorers.clip.ParagraphCLIP`: 100 x the image embedding against the mean of
its sentences' normalised embeddings). Paragraphs below the threshold (17.0) are dropped
into ``filtered_paragraphs``; the kept ones, joined by '\\n\\n', become the output; no
paragraph kept drops the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pf_ray.data.images import ImageError, ImageLoader, batch_images
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch
from pf_ray.filters.common import applies, drop, model_step, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import CLIPFilter
from pf_ray.scorers.clip import ParagraphCLIP, is_multi_paragraph, paragraphs
from pf_ray.scorers.loading import LazyModel
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources, StepDef


class ParagraphCLIPScore(LazyModel):
    name = "clip"
    inputs = ("id", "task", "image", "image_bytes", "extra_images", "output")
    outputs = ("output", "paragraph_clip_scores", "filtered_paragraphs")
    resources = Resources(batch_size=32)

    def __init__(self, model_name: str, pretrained: str, threshold: float = 17.0,
                 max_sentences: int = 10, tasks: Sequence[str] | None = None,
                 loader: ImageLoader | None = None, device: str = "auto",
                 storage: StorageConfig | None = None):
        self.model_name, self.pretrained = model_name, pretrained
        self.threshold, self.max_sentences, self.tasks = threshold, max_sentences, tasks
        self.loader = loader or ImageLoader()
        self.device, self.storage = device, storage
        self.scorer = ParagraphCLIP(model_name, pretrained, max_sentences, device, storage)

    def load(self) -> None:
        self.scorer.ensure()

    def score_paragraphs(self, image: Any, paras: list[str]) -> list[float]:
        return self.scorer.score_paragraphs(image, paras)

    def best_scores(self, images: Sequence[Any], paras: list[str]) -> list[float]:
        """Each paragraph's best score over the row's images."""
        per_image = [self.score_paragraphs(img, paras) for img in images]
        return [max(scores) for scores in zip(*per_image, strict=True)]

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out = new_out(n, "paragraph_clip_scores", "filtered_paragraphs")
        out["output"] = list(batch["output"])
        for i in range(n):
            output = text(batch["output"][i])
            if not applies(batch["task"][i], self.tasks) or not is_multi_paragraph(output):
                continue
            try:
                images = [img for img, _ in self.loader.load_images(batch_images(batch, i))]
            except ImageError as exc:
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = exc.reason, exc.detail
                continue
            if not images:
                out[REJECT_REASON][i] = "image_no_reference"
                out[REJECT_DETAIL][i] = "row has neither image nor image_bytes"
                continue
            paras = paragraphs(output)
            scores = self.best_scores(images, paras)
            kept = [p for p, s in zip(paras, scores, strict=True) if s >= self.threshold]
            out["paragraph_clip_scores"][i] = scores
            out["filtered_paragraphs"][i] = [{"score": s, "text": p} for p, s in
                                             zip(paras, scores, strict=True)
                                             if s < self.threshold]
            if kept:
                out["output"][i] = "\n\n".join(kept)
            else:
                drop(out, i, "filter_clip", f"all {len(paras)} paragraph(s) score below "
                     f"{self.threshold}: {', '.join(f'{s:.2f}' for s in scores)}")
        return out


def _step(c: CLIPFilter, spec: Any) -> StepDef:
    loader = ImageLoader(image_root=c.image_root, storage=spec.storage)
    return model_step(ParagraphCLIPScore, c.pool or spec.pool, model_name=c.model_name,
                      pretrained=c.pretrained, threshold=c.threshold,
                      max_sentences=c.max_sentences, tasks=c.tasks, loader=loader,
                      storage=spec.storage)


# paragraph_clip_scores: CLIPScore of each paragraph of a multi-paragraph output;
# filtered_paragraphs: the paragraphs dropped (score < threshold), as PF-1M stores them; the
# output keeps the others (joined by "\n\n")
SCORED_PARAGRAPH = pa.struct([("score", pa.float64()), ("text", pa.string())])
FILTER = FilterDef("clip", CLIPFilter, _step, ("filter_clip",), required=("pretrained",),
                   columns=(pa.field("paragraph_clip_scores", pa.list_(pa.float64())),
                            pa.field("filtered_paragraphs", pa.list_(SCORED_PARAGRAPH))))
