"""pf-ray's own batched generator over an ``hf_vlm`` model (transformers ``generate``).

The same :class:`~pf_ray.engines.base.Generator` protocol as the Flamingo engine: prompts
give their chat ``messages`` (:mod:`pf_ray.model.hf_vlm.prompts`) and decoded images; the
prompt text is the processor's chat template, batched with left padding. Generation ends
at the template's turn end or EOS (``eos``), a stop string (``stop``) or the token budget
(``length``). Prompts longer than the model's context minus ``max_new_tokens`` are
``prompt_too_long`` rejects. This is the baseline the vLLM engines are measured against,
and greedy outputs agree with vLLM's token for token (``tests/vllm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.engines.base import Prompt, Result
from pf_ray.engines.config import DecodingConfig
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


# --------------------------------------------------------------------------- per-row configs


def generate_rows(model: Any, processor: Any, texts: Sequence[str],
                  images: Sequence[Sequence[Any]], configs: Sequence[Any], *,
                  on_step: Any = None) -> list[Any]:
    """:func:`pf_ray.model.generate.generate_rows` for an ``hf_vlm`` model: one batch of
    prompt texts (chat-template renderings) and their images, each row with its own
    :class:`~pf_ray.model.generate.GenerationConfig` (max_new_tokens, stop strings,
    temperature / top_k / top_p, seed), ``on_step`` called after every decoding step with
    that step's :data:`~pf_ray.model.generate.StepEvent` list (what pf-ray's Serve batcher
    streams). Returns one :class:`~pf_ray.model.generate.Generation` per row.

    One transformers ``generate`` call per group of rows (rows with images and rows without
    go apart: a processor batch takes one kind). Each row's next token is picked by its own
    config (a seeded sampled row draws from its own generator, as pf-ray's Flamingo
    generator does) and handed to ``generate`` as the only finite logit; a row leaves the
    batch at the template's turn end or EOS (``eos``), a stop string (``stop``) or its own
    token budget (``length``).
    """
    if not (len(texts) == len(images) == len(configs)):
        raise ValueError(f"{len(texts)} texts, {len(images)} image lists, {len(configs)} "
                         "generation configs: one each per row")
    if any(c.num_beams > 1 for c in configs):
        raise ValueError("generate_rows: num_beams > 1 is not supported")
    out: list[Any] = [None] * len(texts)
    groups: dict[bool, list[int]] = {}
    for i, imgs in enumerate(images):
        groups.setdefault(bool(imgs), []).append(i)
    for _, rows in sorted(groups.items()):
        def report(events: list[Any], rows: list[int] = rows) -> None:
            if on_step is not None:
                on_step([(rows[item], token, reason) for item, token, reason in events])

        gens = _rows(model, processor, [texts[i] for i in rows], [images[i] for i in rows],
                     [configs[i] for i in rows], report)
        for i, g in zip(rows, gens, strict=True):
            out[i] = g
    return out


def _rows(model: Any, processor: Any, texts: Sequence[str], images: Sequence[Sequence[Any]],
          configs: Sequence[Any], on_step: Any) -> list[Any]:
    import torch
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        StoppingCriteria,
        StoppingCriteriaList,
    )

    from pf_ray.model.generate import Generation, _pick_rows, _StopChecker
    from pf_ray.model.hf_vlm.prompts import stop_token_ids

    tok = processor.tokenizer
    kwargs: dict[str, Any] = {"text": list(texts), "return_tensors": "pt", "padding": True,
                              "add_special_tokens": False}
    if any(images):
        kwargs["images"] = [list(i) for i in images]
    inputs = processor(**kwargs).to(model.device)
    if "pixel_values" in inputs and model.dtype != torch.float32:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    n = len(texts)
    eos = set(stop_token_ids(processor))
    stops = [_StopChecker(tok, c.stop_strings) for c in configs]
    shared: torch.Generator | None = None
    generators: list[torch.Generator | None] = []
    for c in configs:  # as pf_ray.model.generate._rows: a seeded row draws alone
        if not c.do_sample:
            generators.append(None)
        elif c.seed is not None:
            generators.append(torch.Generator(device=model.device).manual_seed(c.seed))
        else:
            if shared is None:
                shared = torch.Generator(device=model.device)
                shared.manual_seed(torch.seed())
            generators.append(shared)
    tokens: list[list[int]] = [[] for _ in range(n)]
    reasons = ["length"] * n
    finished = [False] * n
    rows = list(range(n))

    class Pick(LogitsProcessor):
        """Each row's own choice becomes its only finite logit (generate then takes it)."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            chosen = _pick_rows(scores.float(), rows, configs, generators)
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(n, device=scores.device), chosen] = 0
            return out

    class Stops(StoppingCriteria):
        """A row ends at EOS / a stop string / its own budget; reports each step."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                     **kwargs: Any) -> torch.Tensor:
            events = []
            for i, t in enumerate(input_ids[:, -1].tolist()):
                if finished[i]:
                    continue
                if t in eos:
                    finished[i], reasons[i] = True, "eos"
                    events.append((i, None, "eos"))
                    continue
                tokens[i].append(t)
                if stops[i].hit(tokens[i]):
                    finished[i], reasons[i] = True, "stop"
                elif len(tokens[i]) >= configs[i].max_new_tokens:
                    finished[i], reasons[i] = True, "length"
                events.append((i, t, reasons[i] if finished[i] else None))
            if events:
                on_step(events)
            return torch.tensor(finished, dtype=torch.bool, device=input_ids.device)

    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=max(c.max_new_tokens for c in configs),
                       do_sample=False, num_beams=1, eos_token_id=sorted(eos),
                       pad_token_id=tok.pad_token_id,
                       logits_processor=LogitsProcessorList([Pick()]),
                       stopping_criteria=StoppingCriteriaList([Stops()]))
    return [Generation(token_ids=tokens[i], text=stops[i].text(tokens[i]),
                       finish_reason=reasons[i]) for i in range(n)]  # type: ignore[arg-type]
