"""The rewriter behind one interface: ``Rewriter.rewrite(requests) -> results``.

The engine is the spec's ``engine`` block, built by the engines layer
(:mod:`pf_ray.engines.registry`: pf-ray's model, an OpenAI-compatible server, or any
registered engine); this module only says what the rewriter's prompt is, in every form an
engine may need (:class:`~pf_ray.engines.base.Prompt`):

* pf-ray's model: :func:`pf_ray.model.prompts.encode_rewrite` (token ids, the images marked
  for the model's cross-attention mask);
* completions APIs: the same prompt as text (:func:`pf_ray.model.prompts.rewrite_text`,
  no ``<s>``: the server's tokenizer adds BOS);
* chat APIs: the system message and ``chat_prompt`` filled with the instruction and draft;
* ``hf_vlm`` models: :func:`pf_ray.model.hf_vlm.prompts.rewrite_messages` (the Drafted /
  Revised format through the model's chat template, the revised prefix as a prefill).

Results: the response cut at the first stop string and stripped, why it ended (``eos``,
``stop``, ``length``), or a reject decided for that row alone (``prompt_too_long``,
``http_<status>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from PIL import Image

from pf_ray.engines import registry
from pf_ray.engines.base import Generator, Prompt, Result
from pf_ray.engines.config import DecodingConfig, GenerationEngine
from pf_ray.model.prompts import SYSTEM_MESSAGE, rewrite_stops
from pf_ray.rewrite.prompt import chat_text
from pf_ray.specs import StorageConfig

__all__ = ["Request", "Result", "RewriteEngine", "Rewriter", "engine_factory"]


@dataclass(frozen=True)
class Request:
    """One row to rewrite: its instruction, its draft and every image of the row, in order
    (two for a change caption: before, after)."""

    instruction: str
    draft: str
    images: tuple[Image.Image, ...] = ()  # decoded RGB (pf-ray's model)
    image_bytes: tuple[bytes, ...] = ()  # the encoded images as stored (HTTP engines send them)

    @property
    def num_images(self) -> int:
        return max(len(self.images), len(self.image_bytes))


class RewriteEngine(Protocol):
    """What the rewrite step calls (a :class:`Rewriter`, or a test's stand-in)."""

    def rewrite(self, requests: Sequence[Request]) -> list[Result]: ...


class Rewriter:
    """The rewriter's prompts over an engine (built on first use, once per actor)."""

    def __init__(self, engine: GenerationEngine | Generator, *, prompt_format: str = "paper",
                 decoding: DecodingConfig | None = None, storage: StorageConfig | None = None,
                 chat_prompt: str | None = None):
        from pf_ray.rewrite.spec import DEFAULT_CHAT_PROMPT

        self.prompt_format, self.decoding = prompt_format, decoding or DecodingConfig()
        self.storage = storage or StorageConfig()
        self.chat_prompt = chat_prompt or DEFAULT_CHAT_PROMPT
        self._cfg = engine if isinstance(engine, GenerationEngine) else None
        self._generator: Generator | None = None if self._cfg is not None else engine

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            assert self._cfg is not None
            self._generator = registry.build(self._cfg, self.decoding, self.storage)
        return self._generator

    def prompt(self, r: Request) -> Prompt:
        from pf_ray.model.hf_vlm.prompts import rewrite_messages
        from pf_ray.model.prompts import encode_rewrite, rewrite_text

        fmt, n = self.prompt_format, r.num_images
        return Prompt(
            user=chat_text(r.instruction, r.draft, self.chat_prompt), system=SYSTEM_MESSAGE,
            text=lambda mode: rewrite_text(r.instruction, r.draft, None, images=n, mode=mode,  # type: ignore[arg-type]
                                           prompt_format=fmt, bos=""),  # type: ignore[arg-type]
            encode=lambda tok, mode: encode_rewrite(tok, r.instruction, r.draft, None,
                                                    images=n, mode=mode,
                                                    prompt_format=fmt).input_ids,  # type: ignore[arg-type]
            images=r.images, image_bytes=r.image_bytes,
            stops=rewrite_stops(fmt),
            messages=lambda: rewrite_messages(r.instruction, r.draft, n))

    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        """One result per request, in order."""
        results = self.generator.generate([self.prompt(r) for r in requests])
        return [r if r.reject else Result(r.text.strip(), r.finish_reason) for r in results]


def engine_factory(spec: Any) -> Any:
    """A picklable zero-argument callable that builds the spec's rewriter (once per actor)."""
    return partial(Rewriter, spec.engine, prompt_format=spec.prompt_format,
                   decoding=spec.decoding, storage=spec.storage, chat_prompt=spec.chat_prompt)
