"""Text generation behind one interface: ``engine.generate(prompts, params) -> results``.

* :class:`HFEngine`: a transformers causal LM from a local folder or a URI (copied to a
  local cache first), batched, left-padded generation with stop strings. Loads once per
  actor; used for tiny test models and small real models (SmolLM2 shipped in a PyPI
  package, through its GGUF file).
* :class:`~pf_ray.engines.http.HTTPEngine`: any OpenAI-compatible ``/v1/completions``
  endpoint (a vLLM server, pf-ray's own Serve app), requests sent concurrently.
* ``vllm``: runs through ``ray.data.llm`` as a Ray Data stage, not as an object here; see
  :mod:`pf_ray.engines.vllm` (the stage gives it an ``LLMTask``).

A prompt is a list of chat messages whose last message (an assistant prefill) is continued.
Each prompt gets a :class:`~pf_ray.engines.base.Result`: a text, or a reject for that row
alone (an endpoint's 4xx about the request); infrastructure faults are raised.
``prompt_format`` says how messages become text: ``guanaco`` (the paper's ``### Human:``
format) or ``chat_template`` (the model tokenizer's own template).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from pf_ray.engines.base import GenParams, Result
from pf_ray.engines.config import HFEngineConfig, HTTPEngineConfig, SamplingConfig
from pf_ray.engines.http import HTTPEngine
from pf_ray.engines.prompting import DEFAULT_STOP, Message, cut_at_stop, render
from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy

T = TypeVar("T")
R = TypeVar("R")


class TextEngine(Protocol):
    """What the distortion step calls: chat-message prompts in, one result per prompt."""

    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[Result]:
        """One continuation per prompt, cut at the first stop string, or its row reject."""
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

    def generate(self, prompts: list[list[Message]], params: GenParams) -> list[Result]:
        """Render the prompts in ``prompt_format`` and continue them in one batch."""
        texts = self.complete([render(m, self.prompt_format, self._template) for m in prompts],
                              params)
        return [Result(t) for t in texts]

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


def engine_factory(cfg: HFEngineConfig | HTTPEngineConfig, storage: StorageConfig) -> Any:
    """A picklable zero-argument callable that builds the engine (once per actor)."""
    if isinstance(cfg, HFEngineConfig):
        return partial(HFEngine, model=cfg.model, gguf_file=cfg.gguf_file,
                       prompt_format=cfg.prompt_format, dtype=cfg.dtype,
                       trust_remote_code=cfg.trust_remote_code, storage=storage)
    return partial(HTTPEngine.of, cfg, prompt_format=cfg.prompt_format)


def gen_params(sampling: SamplingConfig, seed: int,
               stop: tuple[str, ...] = DEFAULT_STOP) -> GenParams:
    """Decoding settings of an engine spec as the engines take them."""
    s = sampling
    return GenParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                     top_k=s.top_k, stop=stop, seed=seed)
