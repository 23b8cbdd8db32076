"""One client for every OpenAI-compatible server, and one mapping of its errors.

:class:`HTTPEngine` posts ``/completions`` (``complete_one``: a prompt text, images in the
``images`` field that pf-ray's Serve app reads) or ``/chat/completions`` (``chat_one``:
messages whose content may hold ``image_url`` parts), sends up to ``max_concurrency``
requests at once (``map``) and tells why generation ended (:func:`finished`).

Errors, one taxonomy for every stage (:mod:`pf_ray.faults`): a refused connection, a
timeout, HTTP 429 / 5xx, a refused key or a wrong URL raise
:class:`~pf_ray.faults.EngineUnavailable` (the step retries, then the unit fails); any other
4xx is about the request and raises :class:`HTTPRequestError`, which :meth:`HTTPEngine.result`
turns into that row's reject (``http_<status>``, or ``prompt_too_long`` for an
OpenAI ``context_length_exceeded``).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pf_ray.engines.base import Completion, GenParams, Prompt, Result
from pf_ray.engines.config import DecodingConfig, HTTPEndpoint, HTTPEngineSpec
from pf_ray.engines.prompting import Message, cut_at_stop, render
from pf_ray.engines.registry import EngineDef
from pf_ray.faults import EngineUnavailable, http_status_fault

T = TypeVar("T")
R = TypeVar("R")


# Infrastructure statuses worth a quick retry of the same request (the others, a refused key
# or a wrong URL, would answer the same).
_TRANSIENT = frozenset({408, 425, 429})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx stays an HTTPError: an API endpoint that redirects has a wrong base URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class HTTPRequestError(RuntimeError):
    """A 4xx reply about one request (400, 413, 422, ...): a row fault.

    ``status`` is the HTTP status; ``code`` the OpenAI-style ``error.code`` of the reply
    body when it has one (e.g. ``context_length_exceeded``), else ``""``.
    """

    def __init__(self, url: str, status: int, detail: str, code: str = ""):
        super().__init__(f"{url}: HTTP {status}: {detail}")
        self.url, self.status, self.detail, self.code = url, status, detail, code


def _error_code(body: str) -> str:
    """``error.code`` of an OpenAI-style error body, or ``""``."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) else ""


@dataclass
class HTTPEngine:
    """An OpenAI-compatible completions endpoint (``POST {base_url}/completions``)."""

    base_url: str
    model: str
    prompt_format: str = "guanaco"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_concurrency: int = 8
    retries: int = 2

    @classmethod
    def of(cls, endpoint: HTTPEndpoint, **kwargs: Any) -> HTTPEngine:
        """The client of a spec's endpoint block."""
        return cls(base_url=endpoint.base_url, model=endpoint.model,
                   api_key_env=endpoint.api_key_env, timeout_s=endpoint.timeout_s,
                   max_concurrency=endpoint.max_concurrency, **kwargs)

    def result(self, call: Callable[[], Completion]) -> Result:
        """``call()`` as a :class:`Result`: a 4xx about this request becomes the row's
        reject; infrastructure faults propagate (they are not the row's)."""
        try:
            done = call()
        except HTTPRequestError as exc:
            reason = ("prompt_too_long" if exc.code == "context_length_exceeded"
                      else f"http_{exc.status}")
            return Result(reject=(reason, str(exc)[:2000]))
        return Result(done.text, done.finish_reason)

    def _post(self, body: dict[str, Any], path: str = "/completions") -> dict[str, Any]:
        """POST to ``{base_url}{path}``; the reply's JSON object.

        Statuses follow :func:`pf_ray.faults.http_status_fault` (``endpoint``): a refused
        connection, a timeout, HTTP 408 / 425 / 429 / 5xx get ``retries`` quick retries, then
        raise :class:`EngineUnavailable`; a refused key (401/403/407), payment (402), a
        wrong URL or method (404/405) or a redirect (3xx, never followed) raise it at once:
        every row would fail alike. A 200 whose body is not a JSON object is the server's
        fault too. Any other 4xx is about this request (a row fault) and raises
        :class:`HTTPRequestError`.
        """
        url = self.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with _OPENER.open(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                body_text = exc.read().decode(errors="replace")
                detail = body_text[:500]
                if http_status_fault(exc.code) == "row":  # the request is wrong: no retry
                    raise HTTPRequestError(url, exc.code, detail,
                                           _error_code(body_text)) from exc
                if exc.code not in _TRANSIENT and exc.code < 500:
                    raise EngineUnavailable(f"{url}: HTTP {exc.code} (the endpoint refused "
                                            f"the request, not a row fault): {detail}") from exc
                last = EngineUnavailable(f"{url}: HTTP {exc.code}: {detail}")
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError,
                    http.client.HTTPException) as exc:  # also a reply cut short
                reason = getattr(exc, "reason", exc)
                last = EngineUnavailable(f"{url}: {type(reason).__name__}: {reason}")
                continue
            try:
                reply = json.loads(raw)
            except ValueError as exc:
                raise EngineUnavailable(f"{url}: HTTP 200 but the body is not JSON (not an "
                                        f"OpenAI-compatible server?): {raw[:200]!r}") from exc
            if not isinstance(reply, dict):
                raise EngineUnavailable(f"{url}: HTTP 200 but the body is not a JSON object: "
                                        f"{raw[:200]!r}")
            return reply
        assert last is not None
        raise last

    def _sampling(self, params: GenParams) -> dict[str, Any]:
        """The model and decoding fields of a request body."""
        return {"model": self.model, **params.sampling_fields()}

    def complete_one(self, prompt: str, params: GenParams,
                     images: list[str] | None = None) -> Completion:
        """``POST /completions`` for one prompt text; ``images`` (data: URIs, one per
        ``<image>`` marker of the prompt) go in the ``images`` field, a pf-ray extension
        that pf-ray's Serve app reads."""
        body = {**self._sampling(params), "prompt": prompt}
        if images is not None:
            body["images"] = images
        reply = self._post(body, "/completions")
        try:
            choice = reply["choices"][0]
            return finished(choice["text"], choice, params.stop)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise EngineUnavailable(f"{self.base_url}/completions: HTTP 200 but not a "
                                    f"completions reply: {str(reply)[:300]}") from exc

    def chat_one(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        """``POST /chat/completions`` with OpenAI chat messages (content may be a list of
        ``text`` and ``image_url`` parts, as vision models take them)."""
        reply = self._post({**self._sampling(params), "messages": messages},
                           "/chat/completions")
        try:
            choice = reply["choices"][0]
            return finished(choice["message"]["content"] or "", choice, params.stop)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise EngineUnavailable(f"{self.base_url}/chat/completions: HTTP 200 but not a "
                                    f"chat completions reply: {str(reply)[:300]}") from exc

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with up to ``max_concurrency`` requests in flight."""
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[Result]:
        """``/completions`` for chat-message prompts rendered in ``prompt_format``: one
        result per prompt, a 4xx about a request being that row's reject."""
        texts = [render(m, self.prompt_format) for m in prompts]
        return self.map(lambda t: self.result(lambda: self.complete_one(t, params)), texts)


def finished(text: str, choice: dict[str, Any], stops: Sequence[str]) -> Completion:
    """A completion from an OpenAI-style choice.

    OpenAI's ``finish_reason`` ``stop`` covers both EOS and a stop string; vLLM's
    ``stop_reason`` (the matched stop string, or null for EOS) tells them apart. A stop
    string still in the text (a server that ignores ``stop``) is cut here.
    """
    cut = cut_at_stop(text, tuple(stops))
    if any(s and s in text for s in stops):
        return Completion(cut, "stop")
    if choice.get("finish_reason") == "length":
        return Completion(cut, "length")
    if isinstance(choice.get("stop_reason"), str):
        return Completion(cut, "stop")
    return Completion(cut, "eos")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:{mime};base64,...`` for an image_url part or the ``images`` field."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def http_params(d: DecodingConfig, stops: Sequence[str]) -> GenParams:
    """A decoding config as an HTTP engine's request parameters (greedy = temperature 0)."""
    return GenParams(max_new_tokens=d.max_new_tokens,
                     temperature=d.temperature if d.do_sample else 0.0,
                     top_p=d.top_p, top_k=d.top_k, stop=tuple(stops), seed=d.seed)


# The encodings pf-ray's Serve app decodes (pf_ray.serve.images.FORMATS); others go as PNG.
SENDABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def sendable(data: bytes) -> tuple[bytes, str]:
    """``(bytes, mime)`` of an image to send: as stored when its format is one servers
    decode, else re-encoded to PNG (TIFF, ICO, ... stored rows)."""
    from PIL import Image

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


def image_part(data: bytes) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part carrying the image as a data URI."""
    return {"type": "image_url", "image_url": {"url": data_uri(*sendable(data))}}


class HTTPGenerator:
    """An OpenAI-compatible server as a :class:`~pf_ray.engines.base.Generator`: ``chat``
    sends the prompt's system message and a user message of its images + text,
    ``completions`` its text (``<image>`` markers for ``image_markers``) with the images in
    ``images``; requests go concurrently, a 4xx about a request is that row's reject."""

    def __init__(self, cfg: HTTPEngineSpec, decoding: DecodingConfig):
        self.cfg, self.decoding = cfg, decoding
        self.http = HTTPEngine.of(cfg)

    def messages(self, p: Prompt) -> list[dict[str, Any]]:
        """The chat messages of a prompt: its system message, then the images and text."""
        parts = [image_part(b) for b in p.image_bytes]
        parts.append({"type": "text", "text": p.user})
        system = [{"role": "system", "content": p.system}] if p.system else []
        return [*system, {"role": "user", "content": parts}]

    def _one(self, p: Prompt) -> Result:
        params = http_params(self.decoding, p.stops)
        if self.cfg.api == "chat":
            messages = self.messages(p)
            return self.http.result(lambda: self.http.chat_one(messages, params))
        if p.text is None:
            raise ValueError("a prompt for a completions API needs text(mode)")
        text = p.text(self.cfg.image_markers)
        uris = [data_uri(*sendable(b)) for b in p.image_bytes]
        return self.http.result(lambda: self.http.complete_one(text, params, images=uris))

    def generate(self, prompts: Sequence[Prompt]) -> list[Result]:
        """One result per prompt, requests sent concurrently (``max_concurrency``)."""
        return self.http.map(self._one, list(prompts))


def _build(cfg: HTTPEngineSpec, decoding: DecodingConfig, storage: Any) -> HTTPGenerator:
    return HTTPGenerator(cfg, decoding)


ENGINE = EngineDef("http", HTTPEngineSpec, _build, needs_bytes=True,
                   description="any OpenAI-compatible server (completions or chat)")
