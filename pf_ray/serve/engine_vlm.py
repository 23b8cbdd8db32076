"""One replica's ``hf_vlm`` model: the :class:`~pf_ray.serve.engine.Engine` interface over a
transformers image-text-to-text model (``engine: hf_vlm``; no Ray).

The folder loads as every stage loads an ``hf_vlm`` model
(:func:`pf_ray.model.hf_vlm.load.load_vlm`), its ``adapter/`` kept unmerged so one replica
serves both names: ``<model_name>:<adapter_name>`` with the adapter and ``<model_name>``
without it (the base), as Serve LLM serves a LoRA. A request is rendered by the model's chat
template (:func:`pf_ray.serve.prepare.vlm_messages`) and counted with its images by the
processor; :meth:`VLMEngine.run` decodes a batch with
:func:`pf_ray.model.hf_vlm.generate.generate_rows` (each request with its own config,
per-step events for streaming), the adapter's rows and the base's rows one after the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from pf_ray.model.generate import Generation, StepCallback
from pf_ray.serve.api import APIError
from pf_ray.serve.engine import ModelFault
from pf_ray.serve.images import Checked
from pf_ray.serve.prepare import Job, Plan, vlm_messages
from pf_ray.specs import StorageConfig

log = logging.getLogger(__name__)


class VLMEngine:
    mode = None  # no cross-attention mask mode: the template places the images

    def __init__(self, model_dir: str, *, storage: StorageConfig | None = None,
                 device: str = "auto", torch_threads: int | None = None,
                 fail_marker: str | None = None, adapter_model: str = "") -> None:
        from pf_ray.model.hf_vlm.load import load_vlm

        self.model, self.processor = load_vlm(model_dir, storage=storage, device=device,
                                              num_threads=torch_threads, merge_adapter=False)
        self.tokenizer = self.processor.tokenizer
        self.has_adapter = hasattr(self.model, "disable_adapter")  # a peft model
        self.adapter_model = adapter_model  # the request model name that selects it
        text = self.model.config.get_text_config()
        self.context_length = int(getattr(text, "max_position_embeddings", 2048))
        self.fail_marker = fail_marker
        log.info("loaded hf_vlm %s (adapter: %s, context %d)", model_dir, self.has_adapter,
                 self.context_length)

    def job(self, plan: Plan, rid: str, images: Sequence[Checked]) -> Job:
        """A checked chat request with its checked images: rendered, counted, checked
        against the context."""
        from pf_ray.model.hf_vlm.prompts import render

        if plan.kind != "chat":
            raise APIError(404, "/v1/completions is not served for hf_vlm models; use "
                           "/v1/chat/completions", code="not_found")
        text = render(self.processor, vlm_messages(plan))
        pictures = [c.image for c in images]
        if pictures:
            ids = list(self.processor(text=[text], images=[pictures],
                                      add_special_tokens=False)["input_ids"][0])
        else:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        need = len(ids) + plan.config.max_new_tokens
        if need > self.context_length:
            raise APIError(400, f"messages: this model's context is {self.context_length} "
                           f"tokens; the request needs {need} ({len(ids)} in the prompt, "
                           f"{plan.config.max_new_tokens} to generate)", param="messages",
                           code="context_length_exceeded")
        adapter = self.has_adapter and plan.model == self.adapter_model
        return Job(rid, [int(i) for i in ids], pictures, plan.config, plan.text, plan.stream,
                   prompt=text, adapter=adapter)

    def run(self, jobs: Sequence[Job], on_step: StepCallback | None = None) -> list[Generation]:
        from pf_ray.model.hf_vlm.generate import generate_rows

        if self.fail_marker and any(self.fail_marker in j.text for j in jobs):
            raise ModelFault("injected model fault (spec.fail_marker)")
        out: list[Any] = [None] * len(jobs)
        for adapter in (True, False):
            rows = [i for i, j in enumerate(jobs) if j.adapter == adapter]
            if not rows:
                continue

            def report(events: list[Any], rows: list[int] = rows) -> None:
                if on_step is not None:
                    on_step([(rows[item], token, reason) for item, token, reason in events])

            base = (self.model.disable_adapter() if self.has_adapter and not adapter
                    else contextlib.nullcontext())
            with base:
                gens = generate_rows(self.model, self.processor,
                                     [jobs[i].prompt for i in rows],
                                     [jobs[i].images for i in rows],
                                     [jobs[i].config for i in rows], on_step=report)
            for i, g in zip(rows, gens, strict=True):
                out[i] = g
        return out
