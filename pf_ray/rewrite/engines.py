"""The rewriter behind one interface: ``engine.rewrite(requests) -> results``.

Both engines are the engines layer's (:mod:`pf_ray.engines`) with the rewriter's prompts:

* :class:`FlamingoRewriter`: pf-ray's model through
  :class:`~pf_ray.engines.flamingo.FlamingoGenerator`, prompts encoded with
  :func:`pf_ray.model.prompts.encode_rewrite` (the images marked for the model's
  cross-attention mask).
* :class:`HTTPRewriter`: an OpenAI-compatible server through
  :class:`~pf_ray.engines.http.HTTPEngine`: ``completions`` with the rewriter prompt text and
  the images as data URIs (pf-ray's Serve app), or ``chat`` with image_url parts.

Both return, per request, the response cut at the first stop string and why it ended
(``eos``, ``stop``, ``length``), or a reject decided for that row alone
(``prompt_too_long``, ``http_<status>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from PIL import Image

from pf_ray.engines.base import Result
from pf_ray.engines.config import DecodingConfig
from pf_ray.engines.flamingo import FlamingoGenerator
from pf_ray.engines.http import HTTPEngine, data_uri, http_params, sendable
from pf_ray.model.prompts import rewrite_stops
from pf_ray.rewrite.prompt import chat_messages
from pf_ray.rewrite.spec import FlamingoEngineConfig, HTTPRewriteEngineConfig, RewriteSpec

__all__ = ["FlamingoRewriter", "HTTPRewriter", "Request", "Result", "RewriteEngine",
           "engine_factory", "http_params"]


@dataclass(frozen=True)
class Request:
    instruction: str
    draft: str
    image: Image.Image | None = None  # decoded RGB (flamingo)
    image_bytes: bytes | None = None  # the encoded image as stored (http sends it)


class RewriteEngine(Protocol):
    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        """One result per request, in order."""
        ...


class FlamingoRewriter:
    """pf-ray's Flamingo model as the rewriter (batched, KV cache, image dedup)."""

    def __init__(self, generator: FlamingoGenerator, *, prompt_format: str):
        self.generator, self.prompt_format = generator, prompt_format

    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        from pf_ray.model.prompts import encode_rewrite

        g = self.generator
        images = [[r.image] if r.image is not None else [] for r in requests]
        prompts = [encode_rewrite(g.tokenizer, r.instruction, r.draft, None,
                                  images=len(imgs), mode=g.mask_mode,
                                  prompt_format=self.prompt_format).input_ids  # type: ignore[arg-type]
                   for r, imgs in zip(requests, images, strict=True)]
        return [r if r.reject else Result(r.text.strip(), r.finish_reason)
                for r in g.generate(prompts, images, rewrite_stops(self.prompt_format))]


class HTTPRewriter:
    """The rewriter behind an OpenAI-compatible server (``completions`` or ``chat``)."""

    def __init__(self, cfg: HTTPRewriteEngineConfig, *, prompt_format: str,
                 decoding: DecodingConfig):
        self.cfg, self.prompt_format = cfg, prompt_format
        self.http = HTTPEngine.of(cfg)
        self.params = http_params(decoding, rewrite_stops(prompt_format))

    def _one(self, r: Request) -> Result:
        from pf_ray.model.prompts import rewrite_text

        uris = [data_uri(*sendable(r.image_bytes))] if r.image_bytes else []
        if self.cfg.api == "chat":
            messages = chat_messages(r.instruction, r.draft, uris, self.cfg.chat_prompt)
            return self.http.result(lambda: self.http.chat_one(messages, self.params))
        prompt = rewrite_text(r.instruction, r.draft, None, images=len(uris),
                              mode=self.cfg.image_markers,
                              prompt_format=self.prompt_format,  # type: ignore[arg-type]
                              bos="")
        return self.http.result(lambda: self.http.complete_one(prompt, self.params,
                                                               images=uris))

    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        return self.http.map(self._one, list(requests))


def _flamingo(e: FlamingoEngineConfig, spec: RewriteSpec) -> FlamingoRewriter:
    return FlamingoRewriter(FlamingoGenerator(
        e.model, decoding=spec.decoding, device=e.device, dtype=e.dtype,
        num_threads=e.num_threads, max_prompt_tokens=e.max_prompt_tokens,
        storage=spec.storage), prompt_format=spec.prompt_format)


def engine_factory(spec: RewriteSpec) -> Any:
    """A picklable zero-argument callable that builds the spec's engine (once per actor)."""
    e = spec.engine
    if isinstance(e, FlamingoEngineConfig):
        return partial(_flamingo, e, spec)
    return partial(HTTPRewriter, e, prompt_format=spec.prompt_format, decoding=spec.decoding)
