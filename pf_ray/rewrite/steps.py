"""The rewrite steps: pick each row's (instruction, draft), then rewrite it in an actor pool.

``prepare_rows`` (a CPU task) rejects rows outside ``select`` (``not_selected``, their
conversation and image bytes left in the input dataset) and rows with no instruction or no
raw answer. :class:`Rewrite` (an actor: the engine loads once) reads every image of each
row, in order (rows concurrently; a row with an unreadable one is a reject with the image
loader's reason, naming which image), calls the
engine in batches of ``engine.batch_size`` rows of similar length (the step's micro-batch
holds several of them) and applies the output checks. Rejected rows keep their
``output`` and ``finish_reason`` in the reject's row, so a dataset card can show them.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.conversation import draft_of, first_turn, row_seed
from pf_ray.data.images import ImageError, ImageLoader, batch_images
from pf_ray.data.select import SelectConfig, selected
from pf_ray.rewrite.checks import check_output
from pf_ray.rewrite.engines import Request, Result, RewriteEngine
from pf_ray.rewrite.spec import ChecksConfig
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch, Resources

PREPARED = ("instruction", "original", "conversations", "image_bytes", "extra_images")


def prepare_rows(batch: Batch, *, select: SelectConfig, draft_boxes: bool, seed: int = 0,
                 thresholds: dict[str, int | None] | None = None) -> Batch:
    """``instruction`` and ``original`` (the draft) of each row, or a reject.

    ``thresholds`` (from :func:`pf_ray.rewrite.plan.sample_thresholds`): a row of a listed
    source is selected when its seeded key is at most the source's threshold (None: all).
    """
    thresholds = thresholds or {}
    n = len(batch["id"])
    out: Batch = {"instruction": [None] * n, "original": [None] * n,
                  "conversations": list(batch["conversations"]),
                  "image_bytes": list(batch["image_bytes"]),
                  "extra_images": list(batch["extra_images"]),
                  REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}
    for i in range(n):
        source, task = batch["source"][i], batch["task"][i]
        limit = thresholds.get(source)
        if not selected(select, source, task) or (
                limit is not None and row_seed(seed, batch["id"][i]) > limit):
            out[REJECT_REASON][i] = "not_selected"
            out[REJECT_DETAIL][i] = f"source {source!r}, task {task!r}" + (
                f", beyond select.samples[{source!r}]" if source in thresholds else "")
            out["conversations"][i], out["image_bytes"][i] = [], None
            out["extra_images"][i] = None
            continue
        found = first_turn(batch["conversations"][i] or [])
        if len(found) == 2:
            out[REJECT_REASON][i], out[REJECT_DETAIL][i] = found  # type: ignore[misc]
            continue
        _, instruction, answer = found  # type: ignore[misc]
        out["instruction"][i] = instruction
        out["original"][i] = draft_of(answer, batch["boxes"][i], draft_boxes)
    return out


class Rewrite:
    """The rewriter over a micro-batch: images read, engine called, outputs checked."""

    name = "rewrite"
    inputs = ("id", "image", "image_bytes", "extra_images", "instruction", "original")
    outputs = ("output", "finish_reason")
    resources = Resources()

    def __init__(self, engine_factory: Any, checks: ChecksConfig, loader: ImageLoader,
                 fetch_threads: int = 8, needs_bytes: bool = False,
                 engine_batch: int | None = None):
        self.factory, self.checks, self.loader = engine_factory, checks, loader
        self.fetch_threads, self.needs_bytes = fetch_threads, needs_bytes
        self.engine_batch = engine_batch
        self._engine: RewriteEngine | None = None

    @property
    def engine(self) -> RewriteEngine:
        if self._engine is None:  # built once per actor (its model loads on first use)
            self._engine = self.factory()
        return self._engine

    def _rewrite(self, requests: list[Request]) -> list[Result]:
        """Engine calls of ``engine_batch`` requests of similar length (fewer pad tokens
        in each batch's prefill: a unit mixes one-line VQA prompts with captions + boxes
        several times longer), results in the requests' order."""
        size = self.engine_batch or len(requests)
        order = sorted(range(len(requests)),
                       key=lambda k: len(requests[k].instruction) + len(requests[k].draft))
        results: list[Result | None] = [None] * len(requests)
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            for k, res in zip(chunk, self.engine.rewrite([requests[k] for k in chunk]),
                              strict=True):
                results[k] = res
        return results  # type: ignore[return-value]

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {"output": [None] * n, "finish_reason": [None] * n,
                      REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}
        requests, idx = [], []
        # every image of each row, in order; the http engine sends the stored bytes
        got_all = self.loader.load_rows_images([batch_images(batch, i) for i in range(n)],
                                               keep_bytes=self.needs_bytes,
                                               threads=self.fetch_threads)
        for i, got in enumerate(got_all):
            if isinstance(got, ImageError):
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = got.reason, got.detail
                continue
            requests.append(Request(
                batch["instruction"][i], batch["original"][i], tuple(img for img, _ in got),
                tuple(data for _, data in got if data is not None) if self.needs_bytes else ()))
            idx.append(i)
        if not requests:
            return out
        for i, res in zip(idx, self._rewrite(requests), strict=True):
            if res.reject is not None:
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = res.reject
                continue
            out["output"][i], out["finish_reason"][i] = res.text, res.finish_reason
            failed = check_output(res.text, res.finish_reason, self.checks)
            if failed is not None:
                out[REJECT_REASON][i] = failed[0]
                out[REJECT_DETAIL][i] = f"{failed[1]}: {res.text[:300]!r}"
        return out
