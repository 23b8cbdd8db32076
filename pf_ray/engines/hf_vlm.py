"""The ``hf_vlm`` engine: pf-ray's own batched generator over a transformers
image-text-to-text model, in an actor pool (``engine.kind: hf_vlm``).

The same :class:`~pf_ray.engines.base.Generator` protocol as the Flamingo engine: prompts
give their chat ``messages`` (:mod:`pf_ray.model.hf_vlm.prompts`) and decoded images; the
prompt text is the processor's chat template, batched with left padding. Generation ends
at the template's turn end or EOS (``eos``), a stop string (``stop``) or the token budget
(``length``). Prompts longer than the model's context minus ``max_new_tokens`` are
``prompt_too_long`` rejects. This is the baseline the vLLM engines are measured against,
and greedy outputs agree with vLLM's token for token (``tests/vllm``). The same model at
vLLM speed is the ``vllm`` engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from pf_ray.engines.base import Prompt, Result
from pf_ray.engines.config import DecodingConfig, FlamingoModelFields, GenerationEngine
from pf_ray.engines.registry import EngineDef
from pf_ray.specs import StorageConfig


class HFVLMGenerator:
    """An ``hf_vlm`` model behind one batched ``generate`` (loaded once, on first use)."""

    def __init__(self, source: str | None = None, *, decoding: DecodingConfig | None = None,
                 device: str = "auto", dtype: str = "auto", num_threads: int | None = None,
                 max_prompt_tokens: int | None = None, storage: StorageConfig | None = None,
                 model: Any = None, processor: Any = None):
        if (source is None) == (model is None):
            raise ValueError("HFVLMGenerator: give exactly one of source or model")
        self.source, self.decoding = source, decoding or DecodingConfig()
        self.device, self.dtype, self.num_threads = device, dtype, num_threads
        self.max_prompt_tokens, self.storage = max_prompt_tokens, storage
        self._model, self._processor = model, processor

    def load(self) -> None:
        if self._model is None:
            from pf_ray.model.hf_vlm.load import load_vlm

            assert self.source is not None
            self._model, self._processor = load_vlm(
                self.source, storage=self.storage, device=self.device, dtype=self.dtype,
                num_threads=self.num_threads)

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def processor(self) -> Any:
        self.load()
        return self._processor

    def prompt_limit(self) -> int:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        text = self.model.config.get_text_config()
        positions = getattr(text, "max_position_embeddings", 2048)
        return max(1, int(positions) - self.decoding.max_new_tokens)

    def prompt_texts(self, prompts: Sequence[Prompt]) -> list[str]:
        """Each prompt as the processor's chat template renders it (what vLLM is sent too)."""
        from pf_ray.model.hf_vlm.prompts import render

        out = []
        for p in prompts:
            if p.messages is None:
                raise ValueError("a prompt for an hf_vlm model needs messages")
            out.append(render(self.processor, p.messages()))
        return out

    def generate(self, prompts: Sequence[Prompt], *,
                 batch_size: int | None = None) -> list[Result]:
        """One :class:`Result` per prompt, in order (batches of ``batch_size``, None: all;
        rows with and without images go in separate batches: a processor batch takes one)."""
        texts = self.prompt_texts(prompts)
        limit = self.prompt_limit()
        results: list[Result | None] = [None] * len(prompts)
        groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        for i, (p, text) in enumerate(zip(prompts, texts, strict=True)):
            n = self._count_tokens(text, p.images)
            if n > limit:
                results[i] = Result(reject=("prompt_too_long", f"{n} prompt tokens > {limit} "
                                            "(max_prompt_tokens)"))
                continue
            groups.setdefault((bool(p.images), tuple(p.stops)), []).append(i)
        for (_, stops), idx in groups.items():
            size = batch_size or len(idx)
            for start in range(0, len(idx), size):
                chunk = idx[start:start + size]
                outs = self._generate([texts[i] for i in chunk],
                                      [list(prompts[i].images) for i in chunk], stops)
                for i, r in zip(chunk, outs, strict=True):
                    results[i] = r
        return [r if r is not None else Result(reject=("exception", "no result"))
                for r in results]

    def _count_tokens(self, text: str, images: Sequence[Any]) -> int:
        if not images:
            return len(self.processor.tokenizer(text, add_special_tokens=False).input_ids)
        return int(self.processor(text=[text], images=[list(images)],
                                  add_special_tokens=False)["input_ids"][0].__len__())

    def generate_token_ids(self, texts: Sequence[str],
                           images: Sequence[Sequence[Any]]) -> list[list[int]]:
        """The generated token ids of each prompt text (no stop strings applied): what the
        equivalence test compares with vLLM's."""
        return [ids for ids, _ in self._run(texts, images)]

    def _run(self, texts: Sequence[str],
             images: Sequence[Sequence[Any]]) -> list[tuple[list[int], bool]]:
        import torch

        from pf_ray.model.hf_vlm.prompts import stop_token_ids

        d = self.decoding
        kwargs: dict[str, Any] = {"text": list(texts), "return_tensors": "pt",
                                  "padding": True, "add_special_tokens": False}
        if any(images):
            kwargs["images"] = [list(i) for i in images]
        inputs = self.processor(**kwargs).to(self.model.device)
        if "pixel_values" in inputs and self.model.dtype != torch.float32:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        stops = stop_token_ids(self.processor)
        gen: dict[str, Any] = {"max_new_tokens": d.max_new_tokens, "do_sample": d.do_sample,
                               "num_beams": d.num_beams, "eos_token_id": stops,
                               "pad_token_id": self.processor.tokenizer.pad_token_id}
        if d.do_sample:
            gen.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k or None)
            torch.manual_seed(d.seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        results = []
        for row in new:
            ended = next((k for k, t in enumerate(row) if t in stops), None)
            results.append((row[:ended] if ended is not None else row, ended is not None))
        return results

    def _generate(self, texts: Sequence[str], images: Sequence[Sequence[Any]],
                  stops: Sequence[str]) -> list[Result]:
        from pf_ray.engines.prompting import cut_at_stop

        tok = self.processor.tokenizer
        out = []
        for ids, ended in self._run(texts, images):
            text = tok.decode(ids, skip_special_tokens=True)
            cut = cut_at_stop(text, tuple(stops)) if stops else text.strip()
            reason = "eos" if ended else "length"
            if stops and any(s in text for s in stops):
                reason = "stop"
            out.append(Result(cut, reason))
        return out


class HFVLMModelFields(FlamingoModelFields):
    """Where an ``hf_vlm`` model is and how an actor runs it."""

    model: str = Field(..., description="an hf_vlm model folder or URI (a transformers "
                       "save_pretrained folder, optionally with adapter/ from a training "
                       "export) or an hf_vlm preset (tiny-idefics3, smol-vlm, tiny-llava)")


class HFVLMEngineConfig(GenerationEngine, HFVLMModelFields):
    """An ``hf_vlm`` model with pf-ray's batched generator (transformers ``generate``)."""

    kind: Literal["hf_vlm"]


def _build(cfg: HFVLMEngineConfig, decoding: DecodingConfig,
           storage: StorageConfig) -> HFVLMGenerator:
    if decoding.num_beams > 1:
        raise ValueError("engine hf_vlm: decoding.num_beams must be 1")
    return HFVLMGenerator(cfg.model, decoding=decoding, device=cfg.device, dtype=cfg.dtype,
                          num_threads=cfg.num_threads, max_prompt_tokens=cfg.max_prompt_tokens,
                          storage=storage)


ENGINE = EngineDef("hf_vlm", HFVLMEngineConfig, _build,
                   description="an hf_vlm model (transformers), batched in an actor pool")
