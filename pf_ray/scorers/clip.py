"""CLIPScore of a paragraph: an open_clip image embedding against its sentences'.

For a paragraph P and its first ``max_sentences`` '.'-sentences s_1..s_m (split on '.',
stripped, empty pieces skipped; a paragraph without '.' is one sentence)::

    score(P) = 100 * < v / |v| , (1/m) * sum_j t_j / |t_j| >

with v the open_clip image embedding and t_j the text embedding of s_j. The mean of the
normalised sentence embeddings is *not* re-normalised (paper.md §5: "mean of the L2-normalised
embeddings"), so a paragraph of disagreeing sentences scores lower than each of them.
"""

from __future__ import annotations

from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.scorers.loading import LazyModel, model_folder, torch_device
from pf_ray.specs import StorageConfig


def paragraphs(output: str) -> list[str]:
    """The non-empty paragraphs of ``output`` (split on '\\n\\n', stripped)."""
    return [p.strip() for p in output.split("\n\n") if p.strip()]


def sentences(paragraph: str, max_sentences: int = 10) -> list[str]:
    """The first ``max_sentences`` non-empty '.'-sentences of a paragraph."""
    found = [s.strip() for s in paragraph.split(".") if s.strip()]
    return (found or [paragraph.strip()])[:max_sentences]


def clip_score(image_embedding: Any, sentence_embeddings: Any) -> float:
    """100 * cos-style score of one paragraph.

    image_embedding: (D,); sentence_embeddings: (S, D), both unnormalised.
    """
    import torch

    v = torch.nn.functional.normalize(torch.as_tensor(image_embedding, dtype=torch.float64),
                                      dim=-1)
    t = torch.nn.functional.normalize(torch.as_tensor(sentence_embeddings,
                                                      dtype=torch.float64), dim=-1)
    return float(100.0 * (v @ t.mean(dim=0)))


def is_multi_paragraph(output: str) -> bool:
    """Whether an output has blank-line separated paragraphs (the CLIPScore filter's case)."""
    return "\n\n" in output and len(paragraphs(output)) > 0


class ParagraphCLIP(LazyModel):
    """An open_clip model and its weights file (path or URI), loaded once."""

    def __init__(self, model_name: str, pretrained: str, max_sentences: int = 10,
                 device: str = "auto", storage: StorageConfig | None = None):
        self.model_name, self.pretrained = model_name, pretrained
        self.max_sentences, self.device, self.storage = max_sentences, device, storage

    def load(self) -> None:
        """Load the CLIP model, its preprocessing and tokenizer (once per actor)."""
        import open_clip

        from pf_ray.model.vision import register_tiny_configs

        register_tiny_configs()
        if open_clip.get_model_config(self.model_name) is None:
            raise ModelUnavailable(f"clip.model_name {self.model_name!r}: not an open_clip "
                                   "model name (open_clip.list_models())")
        path = model_folder("clip", self.pretrained, self.storage)
        self._device = torch_device(self.device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=path, device=self._device)
        except Exception as exc:  # noqa: BLE001 - a load failure is never a row's fault
            raise ModelUnavailable(f"clip weights {self.pretrained!r}: {exc}") from exc
        self.model, self.preprocess = model.eval(), preprocess
        self.tokenizer = open_clip.get_tokenizer(self.model_name)

    def embed(self, image: Any, texts: list[str]) -> tuple[Any, Any]:
        """(D,) image embedding and (S, D) text embeddings, unnormalised."""
        import torch

        self.ensure()
        with torch.inference_mode():
            img = self.model.encode_image(self.preprocess(image)[None].to(self._device))[0]
            txt = self.model.encode_text(self.tokenizer(texts).to(self._device))
        return img.float().cpu(), txt.float().cpu()

    def score_paragraphs(self, image: Any, paras: list[str]) -> list[float]:
        """One :func:`clip_score` per paragraph: the image against the mean embedding of the
        paragraph's first ``max_sentences`` sentences."""
        per = [sentences(p, self.max_sentences) for p in paras]
        img, txt = self.embed(image, [s for ss in per for s in ss])
        scores, start = [], 0
        for ss in per:
            scores.append(clip_score(img, txt[start:start + len(ss)]))
            start += len(ss)
        return scores
