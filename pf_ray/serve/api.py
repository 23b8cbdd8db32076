"""OpenAI request and response models, and the OpenAI error object (no Ray, no torch).

Requests are parsed from the raw body with pydantic in strict JSON mode, so ``"5"`` is not a
number and ``1`` is not a string: a wrong type is a 400 naming the field, never a silent
coercion. Unknown top-level fields (``user``, ``logit_bias``...) are ignored as OpenAI does;
options we cannot honour (``n`` > 1, ``logprobs``, tools) are refused by
:mod:`pf_ray.serve.prepare`. Message contents are plain JSON here and checked part by part
there, so that every error names its exact field (``messages[1].content[0].image_url.url``).

Errors follow OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ROLES = ("system", "developer", "user", "assistant")


class APIError(Exception):
    """An HTTP error with an OpenAI error body (raised anywhere, answered by the app)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ChatMessage(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: Any = None  # str | list of parts | None: checked by prepare.chat_turns
    name: str | None = None


class StreamOptions(_Model):
    include_usage: bool = False


class _Sampling(_Model):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Any = None  # refused when set (bool for chat, int for completions)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    tools: Any = None  # refused when set


class CompletionRequest(_Sampling):
    """The legacy completions call of the rewrite stage's ``http`` engine: the full prompt
    text (the model's ``<image>`` markers included) and, as a pf-ray extension, ``images``:
    one ``data:`` URI (or allow-listed URL) per ``<image>``, in order."""

    prompt: str | list[str]
    images: list[str] = Field(default_factory=list)
    echo: bool = False


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*|"
                        r"tagged-union\[.*\]|literal\[.*\]|json-or-python\[.*\])$")


def param_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a field path: ``('messages', 0, 'role')`` -> ``messages[0].role``
    (union member tags that pydantic adds are dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(part):
            out += ("." if out else "") + part
    return out


def parse(cls: type[_Model], body: bytes) -> Any:
    """Validate a JSON body; a malformed or wrongly typed one raises a 400 naming the field."""
    try:
        return cls.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {errors[0]['msg']}",
                           code="invalid_json") from None
        if errors and errors[0]["type"] == "model_type":
            raise APIError(400, "the body must be a JSON object", code="invalid_type") from None
        parts = []
        for e in errors:
            where = param_path(e["loc"]) or "body"
            received = "" if e["type"] == "missing" else f" (received {e['input']!r:.80})"
            parts.append(f"{where}: {e['msg']}{received}")
        # a union (``stop: str | list[str]``) reports each member: name the deepest field
        first = max((e for e in errors if e["loc"][:1] == errors[0]["loc"][:1]),
                    key=lambda e: len(e["loc"]))
        raise APIError(400, "; ".join(parts), param=param_path(first["loc"]) or None,
                       code="missing_field" if first["type"] == "missing"
                       else "invalid_value") from None


# --------------------------------------------------------------------------- responses


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                  completion_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any],
               finish_reason: str | None = None, *,
               include_usage: bool = False) -> dict[str, Any]:
    """One streamed chunk; with ``include_usage`` (``stream_options.include_usage``) it
    carries ``"usage": null``, as OpenAI's chunks before the final usage chunk do."""
    chunk: dict[str, Any] = {
        "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                     "logprobs": None}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(rid: str, model: str, created: int, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def completion_response(rid: str, model: str, text: str, finish_reason: str,
                        prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                         "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def models_response(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "pf-ray"}]}


FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
