"""One replica's model: loaded once from a model folder, decoding batches of jobs (no Ray).

The model loads as every stage loads pf-ray's model (:func:`pf_ray.engines.flamingo.load_model`).

:meth:`Engine.run` hands a whole batch to :func:`pf_ray.model.generate.generate_rows`
(per-request max_tokens / stop / temperature / seed; identical images encoded once) and
reports every decoding step, so the Serve deployment can stream tokens of the requests that
asked for it while the others of the same batch simply collect them.

:class:`TextStream` turns a row's tokens into text deltas. It holds back the end of the text
that could still grow into a stop string, and a trailing partial UTF-8 character, so the
concatenated deltas equal the final, stop-trimmed text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from pf_ray.model.generate import Generation, StepCallback, generate_rows
from pf_ray.serve.images import Checked
from pf_ray.serve.prepare import Job, Plan, encode
from pf_ray.specs import StorageConfig

log = logging.getLogger(__name__)


class ModelFault(RuntimeError):
    """Generation failed inside the model (answered as a 500 with the request id)."""


class Engine:
    """pf-ray's Flamingo model; :class:`pf_ray.serve.engine_vlm.VLMEngine` is the same
    interface over an ``hf_vlm`` model (``job``, ``run``, ``tokenizer``, ``model``)."""

    has_adapter = False  # an adapter is part of the model (served under model_name only)

    def __init__(self, model_dir: str, *, storage: StorageConfig | None = None,
                 device: str = "auto", torch_threads: int | None = None,
                 fail_marker: str | None = None) -> None:
        from pf_ray.engines.flamingo import load_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        # s3:// folders: a cached local copy; LoRA stays unmerged (as trained)
        self.model, self.tokenizer = load_model(model_dir, storage=storage, device=device,
                                                num_threads=torch_threads, merge_lora=False)
        cfg = self.model.config
        self.mode = cfg.xattn.mask
        self.context_length = int(cfg.lm.hf_config.get("max_position_embeddings", 2048))
        self.fail_marker = fail_marker
        log.info("loaded %s on %s (context %d)", model_dir, device, self.context_length)

    def job(self, plan: Plan, rid: str, images: Sequence[Checked]) -> Job:
        """A checked request with its checked images, tokenised (:func:`encode`)."""
        ids = encode(plan, self.tokenizer, self.mode, self.context_length)
        return Job(rid, ids, [c.image for c in images], plan.config, plan.text, plan.stream)

    def run(self, jobs: Sequence[Job], on_step: StepCallback | None = None) -> list[Generation]:
        if self.fail_marker and any(self.fail_marker in j.text for j in jobs):
            raise ModelFault("injected model fault (spec.fail_marker)")
        return generate_rows(self.model, self.tokenizer, [j.prompt_ids for j in jobs],
                             [j.images for j in jobs], [j.config for j in jobs],
                             on_step=on_step)


def completion_tokens(gen_tokens: int, finish_reason: str) -> int:
    """Tokens the model generated: the EOS that ended a row counts (it cost a step)."""
    return gen_tokens + (finish_reason == "eos")


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (to hold back)."""
    best = 0
    for stop in stops:
        for j in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:j]):
                best = j
                break
    return best


class TextStream:
    """Incremental detokenisation of one row; ``feed`` and ``finish`` return text deltas."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], *, incremental: bool = True) -> None:
        self.tokenizer = tokenizer
        self.incremental = incremental  # False: no deltas until the end (decoded once)
        self.stops = tuple(s for s in stops if s)
        self.tokens: list[int] = []
        self.sent = ""

    def _text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def feed(self, token: int | None, *, last: bool = False) -> str:
        """Add the row's next token (None: EOS); ``last``: the row ended, flush the rest."""
        if token is not None:
            self.tokens.append(token)
        if last:
            return self.finish()
        if token is None or not self.incremental:
            return ""
        text = self._text()
        hold = _partial_stop(text, self.stops)
        safe = text[:len(text) - hold] if hold else text
        safe = safe.rstrip("\ufffd")  # a multi-byte character still incomplete
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        delta, self.sent = safe[len(self.sent):], safe
        return delta

    def finish(self) -> str:
        """The rest of the text, cut before the first stop string (as ``generate`` does)."""
        text = self._text()
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=len(text))
        final = text[:cut]
        if not final.startswith(self.sent):  # cannot happen with prefix-stable tokenisers
            log.warning("streamed text is not a prefix of the final text")
            return ""
        delta, self.sent = final[len(self.sent):], final
        return delta
