"""Per-row batched generation for an ``hf_vlm`` model (transformers ``generate``), the
counterpart of :func:`pf_ray.model.generate.generate_rows` for pf-ray's Flamingo family:
what pf-ray's Serve app decodes a batch of requests with (``engine: hf_vlm``), each request
with its own max_tokens / stop strings / sampling / seed and per-step events for streaming.
(The stages' batched generator over the same models is
:class:`pf_ray.engines.hf_vlm.HFVLMGenerator`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
