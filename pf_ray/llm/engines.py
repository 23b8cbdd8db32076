"""Text generation behind one interface: ``engine.generate(prompts, params) -> texts``.

* :class:`HFEngine`: a transformers causal LM from a local folder or a URI (copied to a
  local cache first), batched, left-padded generation with stop strings. Loads once per
  actor; used for tiny test models and small real models (SmolLM2 shipped in a PyPI
  package, through its GGUF file).
* :class:`HTTPEngine`: any OpenAI-compatible ``/v1/completions`` endpoint (a vLLM server,
  pf-ray's own Serve app), requests sent concurrently; ``complete_one`` (with images in
  the ``images`` extension field) and ``chat_one`` (``/v1/chat/completions`` with
  image_url parts) also report why generation ended (:class:`Completion`).
* ``vllm``: runs through ``ray.data.llm`` as a Ray Data stage, not as an object here; see
  :mod:`pf_ray.steps.ray_llm` (the stage gives it an ``LLMTask``).

A prompt is a list of chat messages whose last message (an assistant prefill) is continued.
``prompt_format`` says how messages become text: ``guanaco`` (the paper's ``### Human:``
format) or ``chat_template`` (the model tokenizer's own template).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from pf_ray.faults import EngineUnavailable, ModelUnavailable
from pf_ray.llm.config import HFEngineConfig, HTTPEngineConfig, SamplingConfig
from pf_ray.llm.prompting import DEFAULT_STOP, Message, cut_at_stop, render
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = DEFAULT_STOP
    seed: int = 0


class TextEngine(Protocol):
    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[str]:
        """One continuation per prompt, cut at the first stop string."""
        ...


@dataclass
class HFEngine:
    """A transformers causal LM, loaded once; batched left-padded generation."""

    model: str
    gguf_file: str | None = None
    prompt_format: str = "guanaco"
    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    num_threads: int | None = None
    storage: Any = None
    _tok: Any = field(init=False, repr=False, default=None)
    _lm: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            path = local_copy(self.model, self.storage)
        except (FileNotFoundError, OSError) as exc:
            raise ModelUnavailable(f"engine model {self.model!r}: {exc}") from exc
        if not os.path.exists(path):
            raise ModelUnavailable(f"engine model {self.model!r}: no such folder or file")
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        self._tok = AutoTokenizer.from_pretrained(path, **kwargs)
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self._lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, self.dtype), **kwargs).to(device).eval()
        self._device = device

    def _template(self, messages: list[Message]) -> str:
        return self._tok.apply_chat_template(messages, tokenize=False,
                                             continue_final_message=True)

    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[str]:
        return self.complete([render(m, self.prompt_format, self._template) for m in prompts],
                             params)

    def complete(self, texts: list[str], params: GenParams) -> list[str]:
        """Continue raw prompt texts (batched, left-padded), cut at the stop strings."""
        import torch

        enc = self._tok(texts, return_tensors="pt", padding=True,
                        add_special_tokens=self.prompt_format == "guanaco").to(self._device)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens,
                                  "do_sample": sample, "pad_token_id": self._tok.pad_token_id}
        if sample:
            torch.manual_seed(params.seed)
            kwargs.update(temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k or None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self._tok)
        with torch.inference_mode():
            out = self._lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        decoded = self._tok.batch_decode(new, skip_special_tokens=True)
        return [cut_at_stop(t, params.stop) for t in decoded]


# HTTP statuses that say the endpoint (key, URL, method), not the request, is wrong.
_ENDPOINT_FAULTS = frozenset({401, 403, 404, 405})


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

    def _post(self, body: dict[str, Any], path: str = "/completions") -> dict[str, Any]:
        """POST to ``{base_url}{path}`` with ``retries`` quick retries for transient faults
        of one request.

        A refused connection, a timeout, HTTP 429 or 5xx raise :class:`EngineUnavailable`
        (an infrastructure fault: the step retries with backoff, then fails the job), and so
        do HTTP 401/403/404/405 (a wrong key, URL or method fails every row alike), without
        quick retries; any other 4xx is about this request (a row fault) and raises
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
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                body_text = exc.read().decode(errors="replace")
                detail = body_text[:500]
                if exc.code in _ENDPOINT_FAULTS:  # wrong URL, key or method: every row fails
                    raise EngineUnavailable(f"{url}: HTTP {exc.code} (endpoint refused the "
                                            f"request, not a row fault): {detail}") from exc
                if exc.code < 500 and exc.code != 429:  # the request is wrong: no retry
                    raise HTTPRequestError(url, exc.code, detail,
                                           _error_code(body_text)) from exc
                last = EngineUnavailable(f"{url}: HTTP {exc.code}: {detail}")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                last = EngineUnavailable(f"{url}: {type(reason).__name__}: {reason}")
        assert last is not None
        raise last

    def _sampling(self, params: GenParams) -> dict[str, Any]:
        """The decoding fields of a request body (``top_k`` is a vLLM extension)."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p,
                                "stop": list(params.stop), "seed": params.seed}
        if params.top_k:
            body["top_k"] = params.top_k
        return body

    def _one(self, prompt: str, params: GenParams) -> str:
        return self.complete_one(prompt, params).text

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
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"unexpected completions reply: {str(reply)[:300]}") from exc

    def chat_one(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        """``POST /chat/completions`` with OpenAI chat messages (content may be a list of
        ``text`` and ``image_url`` parts, as vision models take them)."""
        reply = self._post({**self._sampling(params), "messages": messages},
                           "/chat/completions")
        try:
            choice = reply["choices"][0]
            return finished(choice["message"]["content"] or "", choice, params.stop)
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"unexpected chat completions reply: {str(reply)[:300]}") from exc

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with up to ``max_concurrency`` requests in flight."""
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[str]:
        texts = [render(m, self.prompt_format) for m in prompts]
        return self.map(lambda t: self._one(t, params), texts)


@dataclass(frozen=True)
class Completion:
    """A generated text cut at the first stop string, and why generation ended: ``eos``
    (the model ended it), ``stop`` (a stop string) or ``length`` (the token budget)."""

    text: str
    finish_reason: str


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


def engine_factory(cfg: HFEngineConfig | HTTPEngineConfig, storage: StorageConfig) -> Any:
    """A picklable zero-argument callable that builds the engine (once per actor)."""
    if isinstance(cfg, HFEngineConfig):
        return partial(HFEngine, model=cfg.model, gguf_file=cfg.gguf_file,
                       prompt_format=cfg.prompt_format, dtype=cfg.dtype,
                       trust_remote_code=cfg.trust_remote_code, storage=storage)
    return partial(HTTPEngine, base_url=cfg.base_url, model=cfg.model,
                   prompt_format=cfg.prompt_format, api_key_env=cfg.api_key_env,
                   timeout_s=cfg.timeout_s, max_concurrency=cfg.max_concurrency)


def gen_params(sampling: SamplingConfig, seed: int,
               stop: tuple[str, ...] = DEFAULT_STOP) -> GenParams:
    """Decoding settings of an engine spec as the engines take them."""
    s = sampling
    return GenParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                     top_k=s.top_k, stop=stop, seed=seed)
