"""The rewriter behind one interface: ``engine.rewrite(requests) -> results``.

* :class:`FlamingoRewriter`: pf-ray's model from a folder or URI, loaded once per actor
  (on first use: a missing or broken model raises :class:`~pf_ray.faults.ModelUnavailable`
  inside the step, an infrastructure fault that fails the unit, never rejects). One
  :func:`pf_ray.model.generate.generate` call per batch: prompts left-padded, each distinct
  image (by pixel content) encoded once, finished rows leave the batch.
* :class:`HTTPRewriter`: an OpenAI-compatible server through
  :class:`pf_ray.llm.engines.HTTPEngine` (``completions`` with the rewriter prompt and the
  images as data URIs, or ``chat`` with image_url parts), requests sent concurrently; a
  dead server raises :class:`~pf_ray.faults.EngineUnavailable`.

Both return, per request, the response cut at the first stop string and why it ended
(``eos``, ``stop``, ``length``), or a reject decided before generation
(``prompt_too_long``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from PIL import Image

from pf_ray.faults import ModelUnavailable
from pf_ray.llm.engines import Completion, GenParams, HTTPEngine, HTTPRequestError, data_uri
from pf_ray.rewrite.prompt import chat_messages, rewrite_stops
from pf_ray.rewrite.spec import (
    DecodingConfig,
    FlamingoEngineConfig,
    HTTPRewriteEngineConfig,
    RewriteSpec,
)
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy


@dataclass(frozen=True)
class Request:
    instruction: str
    draft: str
    image: Image.Image | None = None  # decoded RGB (flamingo)
    image_bytes: bytes | None = None  # the encoded image as stored (http sends it)


@dataclass(frozen=True)
class Result:
    text: str = ""
    finish_reason: str = ""  # eos | stop | length ("" when rejected)
    reject: tuple[str, str] | None = None  # (reason, detail) decided before generating


class RewriteEngine(Protocol):
    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        """One result per request, in order."""
        ...


class FlamingoRewriter:
    """pf-ray's Flamingo model as the rewriter (batched, KV cache, image dedup)."""

    def __init__(self, model: str, *, prompt_format: str, decoding: DecodingConfig,
                 device: str = "auto", dtype: str = "auto", num_threads: int | None = None,
                 max_prompt_tokens: int | None = None, storage: StorageConfig | None = None):
        self.source, self.prompt_format, self.decoding = model, prompt_format, decoding
        self.device, self.dtype, self.num_threads = device, dtype, num_threads
        self.max_prompt_tokens, self.storage = max_prompt_tokens, storage
        self._model: Any = None
        self._tok: Any = None

    def load(self) -> None:
        """Load the model and tokenizer once (no-op when loaded)."""
        if self._model is not None:
            return
        import torch

        from pf_ray.model.checkpoint import CONFIG_NAME, load_folder_tokenizer, load_pretrained

        try:
            folder = local_copy(self.source, self.storage)
        except (FileNotFoundError, OSError) as exc:
            raise ModelUnavailable(f"engine.model {self.source!r}: {exc}") from exc
        if not os.path.exists(os.path.join(folder, CONFIG_NAME)):
            raise ModelUnavailable(f"engine.model {self.source!r}: no {CONFIG_NAME} there (a "
                                   "pf-ray model folder: pf-ray convert, or a training export)")
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model = load_pretrained(folder, device=device)
            tok = load_folder_tokenizer(folder)
        except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"engine.model {self.source!r}: cannot load: "
                                   f"{type(exc).__name__}: {exc}"[:2000]) from exc
        if self.dtype != "auto":
            model = model.to(getattr(torch, self.dtype))
        if model.config.lora is not None:  # generation only: fold LoRA into the weights
            from pf_ray.model.lora import merge_for_inference

            merge_for_inference(model.lang_encoder)
        self._model, self._tok = model.eval(), tok

    def _limit(self) -> int:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        positions = self._model.config.lm.hf_config.get("max_position_embeddings", 2048)
        return max(1, int(positions) - self.decoding.max_new_tokens)

    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        from pf_ray.model.prompts import encode_rewrite

        def encode(r: Request, images: int, mode: Any) -> list[int]:
            return encode_rewrite(self._tok, r.instruction, r.draft, None, images=images,
                                  mode=mode, prompt_format=self.prompt_format).input_ids  # type: ignore[arg-type]

        return [r if r.reject else Result(r.text.strip(), r.finish_reason)
                for r in self.generate_batch(requests, encode,
                                             rewrite_stops(self.prompt_format))]

    def generate_batch(self, requests: Sequence[Request],
                       encode: Callable[[Request, int, Any], list[int]],
                       stops: Sequence[str]) -> list[Result]:
        """One batched ``generate`` over the requests whose prompt (``encode(request,
        images, mask mode)``) fits; longer prompts are ``prompt_too_long`` rejects. Texts
        are returned as generated (cut before the first stop string)."""
        from pf_ray.model.generate import GenerationConfig, generate

        self.load()
        d = self.decoding
        mode = self._model.config.xattn.mask
        limit = self._limit()
        results: list[Result | None] = [None] * len(requests)
        prompts, images, where = [], [], []
        for i, r in enumerate(requests):
            imgs = [r.image] if r.image is not None else []
            ids = encode(r, len(imgs), mode)
            if len(ids) > limit:
                results[i] = Result(reject=("prompt_too_long", f"{len(ids)} prompt tokens > "
                                            f"{limit} (engine.max_prompt_tokens)"))
                continue
            prompts.append(ids)
            images.append(imgs)
            where.append(i)
        if prompts:
            cfg = GenerationConfig(max_new_tokens=d.max_new_tokens, do_sample=d.do_sample,
                                   temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
                                   num_beams=d.num_beams, length_penalty=d.length_penalty,
                                   stop_strings=tuple(stops),
                                   seed=d.seed if d.do_sample else None)
            for i, g in zip(where, generate(self._model, self._tok, prompts, images, cfg),
                            strict=True):
                results[i] = Result(g.text, g.finish_reason)
        return [r if r is not None else Result(reject=("exception", "no result")) for r in results]


def http_params(d: DecodingConfig, stops: Sequence[str]) -> GenParams:
    """A decoding config as an HTTP engine's request parameters (greedy = temperature 0)."""
    return GenParams(max_new_tokens=d.max_new_tokens,
                     temperature=d.temperature if d.do_sample else 0.0,
                     top_p=d.top_p, top_k=d.top_k, stop=tuple(stops), seed=d.seed)


# The encodings pf-ray's Serve app decodes (pf_ray.serve.images.FORMATS); others go as PNG.
SENDABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def _sendable(data: bytes) -> tuple[bytes, str]:
    """``(bytes, mime)`` of the image to send: as stored when its format is one the server
    decodes, else re-encoded to PNG (TIFF, ICO, ... stored rows)."""
    try:
        img = Image.open(io.BytesIO(data))
        fmt = (img.format or "").upper()
        if fmt in SENDABLE_FORMATS:
            return data, Image.MIME.get(fmt, "image/png")
        out = io.BytesIO()
        img.convert("RGBA" if "A" in img.getbands() else "RGB").save(out, format="PNG")
        return out.getvalue(), "image/png"
    except Exception:  # noqa: BLE001 - decoded before; send as stored, the server decides
        return data, "image/png"


class HTTPRewriter:
    """The rewriter behind an OpenAI-compatible server (``completions`` or ``chat``)."""

    def __init__(self, cfg: HTTPRewriteEngineConfig, *, prompt_format: str,
                 decoding: DecodingConfig):
        self.cfg, self.prompt_format = cfg, prompt_format
        self.http = HTTPEngine(base_url=cfg.base_url, model=cfg.model,
                               api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s,
                               max_concurrency=cfg.max_concurrency)
        self.params = http_params(decoding, rewrite_stops(prompt_format))

    def _one(self, r: Request) -> Result:
        from pf_ray.model.prompts import rewrite_text

        uris = [data_uri(*_sendable(r.image_bytes))] if r.image_bytes else []
        done: Completion
        try:
            if self.cfg.api == "chat":
                done = self.http.chat_one(chat_messages(r.instruction, r.draft, uris,
                                                        self.cfg.chat_prompt), self.params)
            else:
                prompt = rewrite_text(r.instruction, r.draft, None, images=len(uris),
                                      mode=self.cfg.image_markers,
                                      prompt_format=self.prompt_format,  # type: ignore[arg-type]
                                      bos="")
                done = self.http.complete_one(prompt, self.params, images=uris)
        except HTTPRequestError as exc:  # a 4xx about this row (401/403/404/405 raise)
            reason = ("prompt_too_long" if exc.code == "context_length_exceeded"
                      else f"http_{exc.status}")
            return Result(reject=(reason, str(exc)[:2000]))
        return Result(done.text, done.finish_reason)

    def rewrite(self, requests: Sequence[Request]) -> list[Result]:
        return self.http.map(self._one, list(requests))


def engine_factory(spec: RewriteSpec) -> Any:
    """A picklable zero-argument callable that builds the spec's engine (once per actor)."""
    e = spec.engine
    if isinstance(e, FlamingoEngineConfig):
        return partial(FlamingoRewriter, e.model, prompt_format=spec.prompt_format,
                       decoding=spec.decoding, device=e.device, dtype=e.dtype,
                       num_threads=e.num_threads, max_prompt_tokens=e.max_prompt_tokens,
                       storage=spec.storage)
    return partial(HTTPRewriter, e, prompt_format=spec.prompt_format, decoding=spec.decoding)
