"""Requests -> what the generator takes: prompt token ids, images, a generation config.

Chat requests map onto the Clever Flamingo chat format (paper.md §6) through
:func:`pf_ray.model.prompts.encode_chat`, the function training used: a leading system
message (else the Guanaco one) and then ``\\n### Human: {text}<image><|endofchunk|>\\n###
Assistant: {answer}</s>`` per turn. Images stay in the turn that carried them, earlier turns
included, in order: a user message of two ``image_url`` parts (a before and an after image)
is one human turn with two ``<image>`` markers, and the generator gets the two images in
the order of their parts. Within a turn the markers go where the model's mask mode puts
them (after the turn's text for ``next_image``, before it for ``previous_image``: see
:func:`pf_ray.model.prompts.with_images`), wherever the parts sat among the texts.
Consecutive user messages merge into one human turn (texts joined by a newline), as OpenAI
clients send a text and an image as separate messages now and then. A request holds at
most ``limits.max_images`` images, all turns together.

Legacy completions carry the whole prompt (e.g. the rewriter prompt of
:func:`pf_ray.model.prompts.rewrite_text`); it is tokenised as ``encode_rewrite`` does: BOS,
then the text without special-token handling, so a served rewriter sees the ids it was
trained on. ``<image>`` markers in the text must match the ``images`` list one to one.

``hf_vlm`` models (``model: {family: hf_vlm, ...}``) get the same checked turns as chat
messages for the model's own chat template (:func:`vlm_messages`: the system message, then
per turn a user message of its images and text, and the assistant's answer), through
pf-ray's generator (:mod:`pf_ray.serve.engine_vlm`) or, as OpenAI messages with the checked
images inlined as ``data:`` URIs (:func:`openai_messages`), through vLLM; Clever Flamingo's
turn-marker stop strings do not apply to them (their template ends a turn with a token).

Every refusal is an :class:`~pf_ray.serve.api.APIError` naming the field.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from transformers import PreTrainedTokenizerBase

from pf_ray.model.config import MaskMode
from pf_ray.model.generate import GenerationConfig
from pf_ray.model.prompts import STOP_STRINGS, SYSTEM_MESSAGE, Turn, encode_chat
from pf_ray.model.tokenizer import ENDOFCHUNK_TOKEN, MEDIA_TOKEN
from pf_ray.serve import images as image_io
from pf_ray.serve.api import APIError, ChatRequest, CompletionRequest
from pf_ray.serve.images import ImageRef
from pf_ray.serve.spec import ServeSpec

RESERVED = (MEDIA_TOKEN, ENDOFCHUNK_TOKEN)


@dataclass
class Plan:
    """A checked request before its images are loaded and its prompt tokenised."""

    kind: str  # "chat" | "completion"
    config: GenerationConfig
    image_refs: list[ImageRef]
    text: str  # every text of the request (for logs and the testing fail_marker)
    turns: list[Turn] = field(default_factory=list)
    system: str = SYSTEM_MESSAGE
    prompt: str = ""
    stream: bool = False
    include_usage: bool = False
    model: str = ""  # the model name the request asked for (an adapter's, for hf_vlm)


@dataclass
class Job:
    """One request ready for the batched generator."""

    rid: str
    prompt_ids: list[int]
    images: list[Image.Image]
    config: GenerationConfig
    text: str
    stream: bool = False  # wants deltas as they come (else only the final text)
    prompt: str = ""  # hf_vlm: the chat template's rendering (the processor expands images)
    adapter: bool = False  # hf_vlm: generate with the folder's adapter


def served_models(spec: ServeSpec, adapter: bool = False) -> tuple[str, ...]:
    """The model names a request may ask for: ``model_name``, and for an ``hf_vlm`` folder
    with an adapter ``<model_name>:<adapter_name>`` first (the trained model; Serve LLM's
    LoRA naming), the base model second."""
    if adapter:
        return (f"{spec.model_name}:{spec.adapter_name}", spec.model_name)
    return (spec.model_name,)


def _sampling(req: ChatRequest | CompletionRequest, spec: ServeSpec, max_tokens: int | None,
              extra_stops: tuple[str, ...],
              models: Sequence[str] | None = None) -> GenerationConfig:
    lim = spec.limits
    models = tuple(models or (spec.model_name,))
    if req.model not in models:
        raise APIError(404, f"model: {req.model!r} is not served here; available: "
                       f"{', '.join(map(repr, models))}", param="model",
                       code="model_not_found")
    if req.n != 1:
        raise APIError(400, f"n: received {req.n}; allowed: 1", param="n",
                       code="invalid_value")
    if req.logprobs not in (None, False):
        raise APIError(400, "logprobs: not supported", param="logprobs", code="invalid_value")
    n_tokens = max_tokens if max_tokens is not None else lim.default_max_tokens
    if n_tokens > lim.max_tokens:
        raise APIError(400, f"max_tokens: received {n_tokens}; allowed: at most "
                       f"{lim.max_tokens}", param="max_tokens", code="invalid_value")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > lim.max_stop:
        raise APIError(400, f"stop: {len(stops)} strings; allowed: at most {lim.max_stop}",
                       param="stop", code="invalid_value")
    if any(not s for s in stops):
        raise APIError(400, "stop: empty strings are not allowed", param="stop",
                       code="invalid_value")
    temperature = 1.0 if req.temperature is None else req.temperature
    return GenerationConfig(max_new_tokens=n_tokens, do_sample=temperature > 0,
                            temperature=temperature if temperature > 0 else 1.0,
                            top_p=1.0 if req.top_p is None else req.top_p,
                            stop_strings=tuple(stops) + extra_stops, seed=req.seed)


def _check_text(text: str, param: str) -> str:
    for marker in RESERVED:
        if marker in text:
            raise APIError(400, f"{param}: contains the reserved marker {marker!r} (attach "
                           "images as image_url parts)", param=param, code="invalid_value")
    return text


def _content(content: Any, param: str, images_allowed: bool) -> tuple[str, list[ImageRef]]:
    """A message's text (parts joined by newlines) and image refs."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return _check_text(content, param), []
    if not isinstance(content, list):
        raise APIError(400, f"{param}: must be a string or a list of content parts (received "
                       f"{type(content).__name__})", param=param, code="invalid_type")
    texts: list[str] = []
    refs: list[ImageRef] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise APIError(400, f"{p}: must be an object with a 'type'", param=p,
                           code="invalid_type")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise APIError(400, f"{p}.text: must be a string", param=f"{p}.text",
                               code="invalid_type")
            texts.append(_check_text(text, f"{p}.text"))
        elif kind == "image_url":
            if not images_allowed:
                raise APIError(400, f"{p}: images are allowed in user messages only", param=p,
                               code="invalid_value")
            img = part.get("image_url")
            url = img.get("url") if isinstance(img, dict) else None
            if not isinstance(url, str):
                raise APIError(400, f"{p}.image_url.url: must be a string", param=f"{p}.image_url"
                               ".url", code="invalid_type")
            refs.append(ImageRef(url, f"{p}.image_url.url"))
        else:
            raise APIError(400, f"{p}.type: received {kind!r}; allowed: 'text', 'image_url'",
                           param=f"{p}.type", code="invalid_value")
    return "\n".join(texts), refs


def plan_chat(req: ChatRequest, spec: ServeSpec, models: Sequence[str] | None = None) -> Plan:
    """A checked chat request; ``models``: the names it may ask for (:func:`served_models`;
    None: ``spec.model_name``)."""
    lim = spec.limits
    if len(req.messages) > lim.max_messages:
        raise APIError(400, f"messages: {len(req.messages)} messages; allowed: at most "
                       f"{lim.max_messages}", param="messages", code="too_many_messages")
    if req.tools not in (None, []):
        raise APIError(400, "tools: not supported", param="tools", code="invalid_value")
    stops = STOP_STRINGS if spec.model_family == "flamingo" else ()
    config = _sampling(req, spec, req.max_completion_tokens or req.max_tokens, stops, models)
    system: list[str] = []
    turns: list[Turn] = []
    refs: list[ImageRef] = []
    pending: tuple[list[str], int] | None = None  # the human turn being built
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}].content"
        if msg.role in ("system", "developer"):
            if turns or pending is not None:
                raise APIError(400, f"messages[{i}].role: a system message may only come "
                               "first", param=f"messages[{i}].role", code="invalid_value")
            system.append(_content(msg.content, param, images_allowed=False)[0])
        elif msg.role == "user":
            text, imgs = _content(msg.content, param, images_allowed=True)
            refs += imgs
            if pending is None:
                pending = ([text], len(imgs))
            else:
                pending = (pending[0] + [text], pending[1] + len(imgs))
        else:  # assistant
            if pending is None:
                raise APIError(400, f"messages[{i}].role: an assistant message must follow a "
                               "user message", param=f"messages[{i}].role",
                               code="invalid_value")
            text, _ = _content(msg.content, param, images_allowed=False)
            turns.append(Turn("\n".join(pending[0]), text, images=pending[1]))
            pending = None
    if pending is None:
        raise APIError(400, "messages: the last message must be from the user",
                       param="messages", code="invalid_value")
    turns.append(Turn("\n".join(pending[0]), None, images=pending[1]))
    if len(refs) > lim.max_images:
        raise APIError(400, f"messages: {len(refs)} images (image_url parts of all messages); "
                       f"allowed: at most {lim.max_images} (limits.max_images)",
                       param="messages", code="too_many_images")
    sys_text = "\n".join(system) if system else (spec.system_message or SYSTEM_MESSAGE)
    text = "\n".join([*system, *(t.human for t in turns), *(t.assistant or "" for t in turns)])
    include = bool(req.stream_options and req.stream_options.include_usage)
    return Plan("chat", config, refs, text, turns=turns, system=sys_text, stream=req.stream,
                include_usage=include, model=req.model)


def plan_completion(req: CompletionRequest, spec: ServeSpec) -> Plan:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise APIError(400, f"prompt: {len(prompt)} prompts; allowed: one per request",
                           param="prompt", code="invalid_value")
        prompt = prompt[0]
    if req.echo:
        raise APIError(400, "echo: not supported", param="echo", code="invalid_value")
    if req.stream:
        raise APIError(400, "stream: not supported on /v1/completions (use "
                       "/v1/chat/completions)", param="stream", code="invalid_value")
    config = _sampling(req, spec, req.max_tokens, ())
    markers = prompt.count(MEDIA_TOKEN)
    if markers != len(req.images):
        raise APIError(400, f"images: the prompt has {markers} {MEDIA_TOKEN} marker(s) but "
                       f"{len(req.images)} image(s) were sent", param="images",
                       code="invalid_value")
    if len(req.images) > spec.limits.max_images:
        raise APIError(400, f"images: {len(req.images)} images; allowed: at most "
                       f"{spec.limits.max_images} (limits.max_images)", param="images",
                       code="too_many_images")
    refs = [ImageRef(u, f"images[{k}]") for k, u in enumerate(req.images)]
    return Plan("completion", config, refs, prompt, prompt=prompt)


def encode(plan: Plan, tokenizer: PreTrainedTokenizerBase, mode: MaskMode,
           context_length: int) -> list[int]:
    """The prompt's token ids (checked: image markers, context length)."""
    if plan.kind == "chat":
        ids = encode_chat(tokenizer, plan.turns, mode, system=plan.system).input_ids
        param = "messages"
    else:
        text = plan.prompt
        if tokenizer.bos_token and text.startswith(tokenizer.bos_token):
            text = text[len(tokenizer.bos_token):]
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]
        param = "prompt"
        media = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
        if sum(i == media for i in ids) != len(plan.image_refs):
            raise APIError(400, f"prompt: its {MEDIA_TOKEN} markers do not tokenise to one "
                           "token each", param="prompt", code="invalid_value")
    need = len(ids) + plan.config.max_new_tokens
    if need > context_length:
        raise APIError(400, f"{param}: this model's context is {context_length} tokens; the "
                       f"request needs {need} ({len(ids)} in the prompt, "
                       f"{plan.config.max_new_tokens} to generate)", param=param,
                       code="context_length_exceeded")
    return ids


async def load_images(plan: Plan, spec: ServeSpec) -> list[image_io.Checked]:
    """A checked request's images (concurrently, each checked against the spec's allow-list
    and limits), in the order of ``plan.image_refs``: the order of the prompt's images."""
    return list(await asyncio.gather(*(image_io.load_checked(
        ref, allowed_hosts=spec.image_fetch.allowed_hosts, max_bytes=spec.limits.max_image_bytes,
        max_pixels=spec.limits.max_image_pixels, timeout_s=spec.image_fetch.timeout_s)
        for ref in plan.image_refs)))


async def load_job(plan: Plan, rid: str, spec: ServeSpec, tokenizer: PreTrainedTokenizerBase,
                   mode: MaskMode, context_length: int) -> Job:
    """What pf-ray's Flamingo generator gets for a checked request: its images loaded
    (:func:`load_images`) and its prompt encoded (:func:`encode`)."""
    pictures = [c.image for c in await load_images(plan, spec)]
    ids = encode(plan, tokenizer, mode, context_length)
    return Job(rid, ids, pictures, plan.config, plan.text, plan.stream)


def vlm_messages(plan: Plan) -> list[dict[str, Any]]:
    """A chat plan as messages for an ``hf_vlm`` model's chat template: the system message,
    then per turn a user message (``{"type": "image"}`` per image, then the text) and the
    assistant's answer; the last turn is open (:func:`pf_ray.model.hf_vlm.prompts.
    chat_messages`, the function training and eval use)."""
    from pf_ray.model.hf_vlm.prompts import chat_messages

    return chat_messages(plan.turns, system=plan.system)


def data_uri(image: image_io.Checked) -> str:
    """A checked image as a ``data:`` URI of its original bytes (no re-encoding)."""
    return (f"data:image/{image.format.lower()};base64,"
            + base64.b64encode(image.data).decode("ascii"))


def openai_messages(plan: Plan, images: Sequence[image_io.Checked]) -> list[dict[str, Any]]:
    """:func:`vlm_messages` in OpenAI's form, each image an ``image_url`` part holding the
    checked bytes as a ``data:`` URI (what vLLM is sent: no URL of the client reaches it)."""
    urls = iter(data_uri(i) for i in images)
    out: list[dict[str, Any]] = []
    for m in vlm_messages(plan):
        if isinstance(m["content"], list):
            m = {**m, "content": [{"type": "image_url", "image_url": {"url": next(urls)}}
                                  if p.get("type") == "image" else p for p in m["content"]]}
        out.append(m)
    if next(urls, None) is not None:  # cannot happen: turns count their images
        raise ValueError("more images than the messages' image parts")
    return out


def vllm_request(plan: Plan, images: Sequence[image_io.Checked]) -> dict[str, Any]:
    """The OpenAI chat body sent on to vLLM (Ray Serve LLM) for a checked chat plan: its
    messages rebuilt (:func:`openai_messages`: the default system message included, images
    as ``data:`` URIs of the checked bytes) and its sampling resolved by pf-ray's limits
    (``max_tokens`` with the default applied, temperature 0 for greedy)."""
    cfg = plan.config
    body: dict[str, Any] = {
        "model": plan.model, "messages": openai_messages(plan, images),
        "max_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature if cfg.do_sample else 0.0, "top_p": cfg.top_p,
        "stream": plan.stream}
    if cfg.stop_strings:
        body["stop"] = list(cfg.stop_strings)
    if cfg.seed is not None:
        body["seed"] = cfg.seed
    if plan.stream and plan.include_usage:
        body["stream_options"] = {"include_usage": True}
    return body
