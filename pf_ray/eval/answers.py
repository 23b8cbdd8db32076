"""Answer sources as steps: an exported pf-ray model or an OpenAI-compatible endpoint.

Each ``model`` / ``http`` source is one step (an actor pool: the model loads once per
actor) that answers the rows of its own source and passes the others through, so every
source runs in its own pool over the same units. The engines are the engines layer's
(:mod:`pf_ray.engines`) with eval's prompts:

* ``model``: :class:`~pf_ray.engines.flamingo.FlamingoGenerator`, or for an ``hf_vlm``
  model (``model: {family: hf_vlm, path: ...}``)
  :class:`~pf_ray.engines.hf_vlm.HFVLMGenerator` with the same prompts through the
  model's chat template (:mod:`pf_ray.model.hf_vlm.prompts`).
  ``prompt: chat`` encodes the question in Clever Flamingo's chat format with
  :func:`pf_ray.model.prompts.encode_chat`, exactly as the Serve app does for a chat request
  (same system message, same image markers), so under greedy decoding the served model and
  its checkpoint give the same answers; ``prompt: rewrite`` is the rewriter prompt
  (:func:`pf_ray.model.prompts.encode_rewrite`) with the item's raw annotation as the draft.
* ``http``: :class:`~pf_ray.engines.http.HTTPGenerator` on the chat API: a user message of
  one image_url part per image (the stored bytes as data URIs) and the question text.
  A 4xx about one request is that row's reject (``http_<status>``); a dead endpoint or a
  refused key raises :class:`~pf_ray.faults.EngineUnavailable` and fails the unit.

An item with several images (``extra_images``: a change caption's before and after) asks
about all of them at once, as every image of a row belongs to its first user turn: the
prompt's one human turn carries one ``<image>`` marker per image and the engine gets the
images in the row's order (``image`` first, then ``extra_images``); over HTTP they are that
many image_url parts, in that order.

Answers are cleaned alike (cut at the first stop string, stripped) so sources compare on
their text only. Unreadable images are rejects with the image loader's reason (naming
which image, ``image 2 of 2: ...``, when the item has several).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image

from pf_ray.data.images import ImageError, ImageLoader, batch_images
from pf_ray.engines.base import Generator, Prompt, Result
from pf_ray.engines.config import HTTPEndpoint, HTTPEngineSpec
from pf_ray.engines.flamingo import FlamingoGenerator
from pf_ray.engines.http import HTTPGenerator
from pf_ray.engines.prompting import cut_at_stop
from pf_ray.eval.spec import EvalSpec, HTTPSource, ModelSource
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch, Resources, StepDef

ANSWER_INPUTS = ("id", "answerer", "image", "image_bytes", "extra_images", "instruction",
                 "original", "output", "finish_reason")
ANSWER_OUTPUTS = ("output", "finish_reason")


def _stops() -> tuple[str, ...]:
    from pf_ray.model.prompts import STOP_STRINGS

    return STOP_STRINGS


@dataclass(frozen=True)
class Request:
    question: str
    draft: str  # the item's raw annotation (the rewriter's draft with ``prompt: rewrite``)
    images: tuple[Image.Image, ...] = ()  # decoded RGB, in the row's order (model sources)
    image_bytes: tuple[bytes, ...] = ()  # the encoded images as stored (http sends them)

    @property
    def num_images(self) -> int:
        """The images the prompt marks (decoded or as stored, whichever the engine takes)."""
        return max(len(self.images), len(self.image_bytes))


class Answerer:
    """Eval's prompts over an engine of the engines layer: ``chat`` asks the question in
    Clever Flamingo's chat format (``system``: a system message for chat APIs), ``rewrite``
    gives the rewriter the question and the raw annotation as its draft."""

    def __init__(self, generator: Generator, *, prompt: str = "chat",
                 prompt_format: str = "paper", system: str | None = None):
        self.generator, self.prompt_kind = generator, prompt
        self.prompt_format, self.system = prompt_format, system

    def prompt(self, r: Request) -> Prompt:
        from pf_ray.model.hf_vlm.prompts import chat_messages, rewrite_messages
        from pf_ray.model.prompts import Turn, encode_chat, encode_rewrite, rewrite_stops

        # every image of the item belongs to its one human turn: one marker each, in order
        n, fmt = r.num_images, self.prompt_format
        images, data = r.images, r.image_bytes
        if self.prompt_kind == "rewrite":
            return Prompt(user=r.question, images=images, image_bytes=data,
                          encode=lambda tok, mode: encode_rewrite(
                              tok, r.question, r.draft, None, images=n, mode=mode,
                              prompt_format=fmt).input_ids,  # type: ignore[arg-type]
                          stops=rewrite_stops(fmt),
                          messages=lambda: rewrite_messages(r.question, r.draft, n))
        return Prompt(user=r.question, system=self.system, images=images, image_bytes=data,
                      encode=lambda tok, mode: encode_chat(
                          tok, [Turn(r.question, None, images=n)], mode).input_ids,
                      stops=_stops(),
                      messages=lambda: chat_messages([Turn(r.question, None, images=n)]))

    def answer(self, requests: Sequence[Request]) -> list[Result]:
        # Answers compare on their text only: every source is cut at pf-ray's stop strings.
        return [r if r.reject else Result(cut_at_stop(r.text, _stops()), r.finish_reason)
                for r in self.generator.generate([self.prompt(q) for q in requests])]


class Answer:
    """One answer source over a micro-batch: its rows' images read, the engine called."""

    name = "answer"
    inputs = ANSWER_INPUTS
    outputs = ANSWER_OUTPUTS
    resources = Resources()

    def __init__(self, source: str, engine_factory: Any, loader: ImageLoader,
                 needs_bytes: bool = False, fetch_threads: int = 8):
        self.source, self.factory, self.loader = source, engine_factory, loader
        self.needs_bytes, self.fetch_threads = needs_bytes, fetch_threads
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:  # once per actor; the model loads on first use
            self._engine = self.factory()
        return self._engine

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {"output": list(batch["output"]),
                      "finish_reason": list(batch["finish_reason"]),
                      REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}
        mine = [i for i in range(n) if batch["answerer"][i] == self.source]
        if not mine:
            return out
        got = self.loader.load_rows_images([batch_images(batch, i) for i in mine],
                                           keep_bytes=self.needs_bytes,
                                           threads=self.fetch_threads)
        requests, idx = [], []
        for i, g in zip(mine, got, strict=True):
            if isinstance(g, ImageError):  # the first unusable image ("image 2 of 2: ...")
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = g.reason, g.detail
                continue
            data = tuple(b for _, b in g if b is not None) if self.needs_bytes else ()
            requests.append(Request(batch["instruction"][i], batch["original"][i],
                                    tuple(img for img, _ in g), data))
            idx.append(i)
        for i, res in zip(idx, self.engine.answer(requests) if requests else [], strict=True):
            if res.reject is not None:
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = res.reject
            else:
                out["output"][i], out["finish_reason"][i] = res.text, res.finish_reason
        return out


def _model(source: ModelSource, spec: EvalSpec) -> Answerer:
    generator: Generator
    if source.model_family == "hf_vlm":
        from pf_ray.engines.hf_vlm import HFVLMGenerator

        generator = HFVLMGenerator(
            source.model, decoding=spec.decoding, device=source.device, dtype=source.dtype,
            num_threads=source.num_threads, max_prompt_tokens=source.max_prompt_tokens,
            storage=spec.storage)
    else:
        generator = FlamingoGenerator.of(source, spec.decoding, spec.storage)
    return Answerer(generator, prompt=source.prompt, prompt_format=source.prompt_format)


def _http(source: HTTPSource, spec: EvalSpec) -> Answerer:
    endpoint = {k: getattr(source, k) for k in HTTPEndpoint.model_fields}
    cfg = HTTPEngineSpec(kind="http", api="chat", **endpoint)
    return Answerer(HTTPGenerator(cfg, spec.decoding), system=source.system)


def engine_factory(source: ModelSource | HTTPSource, spec: EvalSpec) -> Any:
    """A picklable zero-argument callable that builds the source's answerer (per actor)."""
    return partial(_model if isinstance(source, ModelSource) else _http, source, spec)


def answer_steps(spec: EvalSpec) -> list[StepDef]:
    """One step per model / http source, each in its own actor pool."""
    loader = ImageLoader(storage=spec.storage, max_pixels=spec.images.max_pixels,
                         max_bytes=spec.images.max_bytes, timeout_s=spec.images.timeout_s,
                         allowed_hosts=tuple(spec.images.allowed_hosts))
    steps = []
    for s in spec.sources:
        if isinstance(s, ModelSource | HTTPSource):
            steps.append(StepDef(
                f"answer_{s.name}", Answer, ANSWER_INPUTS, ANSWER_OUTPUTS,
                # the micro-batch holds every source's rows: ~batch_size are its own
                s.resources(batch_size=s.batch_size * len(spec.sources)),
                {"source": s.name, "engine_factory": engine_factory(s, spec),
                 "loader": loader, "needs_bytes": s.kind == "http",
                 "fetch_threads": spec.images.fetch_threads}))
    return steps
