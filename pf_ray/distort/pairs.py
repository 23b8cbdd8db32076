"""The distortion steps: plan each pair, apply the CPU families, run the LLM family.

All random choices of a pair come from ``row_seed(job seed, pair id)``, so a rerun
reproduces every pair byte for byte (the LLM family too, with greedy decoding on the same
batches). The family of a pair comes from the spec's ``targets`` (exact counts, see
:mod:`targets`) or, without targets, is drawn from the ``mixture`` weights.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from pf_ray.data.boxes import captions_boxes_index, image_key, serialise
from pf_ray.data.conversation import Located, locate, row_seed
from pf_ray.data.images import batch_images
from pf_ray.data.select import SelectConfig, selected
from pf_ray.distort.augment import augment_until_changed
from pf_ray.distort.llm_instructed import build_messages, check_output, pick_style
from pf_ray.distort.spec import MixtureConfig
from pf_ray.distort.styles import STYLE_BY_NAME
from pf_ray.distort.targets import Quota, assign, select_key
from pf_ray.engines.base import GenParams
from pf_ray.engines.text import TextEngine
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch, Resources

__all__ = ["AttachCaptionsBoxes", "LLMDistort", "cpu_families", "image_key", "plan_pairs",
           "row_seed"]

# Rows not selected keep their id, source, task and turn in the rejects; their conversation
# and image bytes stay in the input dataset (at paper scale most text pairs are not selected).
SLIMMED = {"conversations": [], "image_bytes": None, "extra_images": None}
PAIR_COLUMNS = ("family", "style", "seed", "turn", "instruction", "original", "target")


def choose_family(weights: dict[str, float], rng: random.Random) -> str | None:
    items = [(f, w) for f, w in sorted(weights.items()) if w > 0]
    if not items:
        return None
    total = sum(w for _, w in items)
    x = rng.random() * total
    for family, w in items:
        x -= w
        if x < 0:
            return family
    return items[-1][0]


def _weights(mixture: MixtureConfig, source: str, has_image: bool, has_boxes: bool,
             llm: bool) -> dict[str, float]:
    if source in mixture.per_source:
        weights = dict(mixture.per_source[source])
    elif not has_image:
        weights = dict(mixture.text)
    else:
        weights = dict(mixture.image_with_boxes if has_boxes else mixture.image)
    if not has_boxes:
        weights.pop("boxes", None)
    if not llm:
        weights.pop("llm", None)
    return weights


def plan_pairs(batch: Batch, *, seed: int, mixture: MixtureConfig, select: SelectConfig,
               llm_enabled: bool, max_chars: int,
               quotas: Sequence[Quota] | None = None) -> Batch:
    """Locate each row's pair (its own ``turn``, or a seeded one) and pick its family (the
    target that takes it, or a draw from the mixture) and, for ``llm``, its style."""
    n = len(batch["id"])
    out: Batch = {k: [None] * n for k in (*PAIR_COLUMNS, REJECT_REASON, REJECT_DETAIL)}
    turns_in = batch.get("turn", [None] * n)  # set by the reader for every_turn
    out["turn"], out["target"] = list(turns_in), [""] * n
    out.update({k: list(batch[k]) for k in SLIMMED})
    boxes = batch.get("captions_boxes", [None] * n)
    for i in range(n):
        pid, source, task = batch["id"][i], batch["source"][i], batch["task"][i]

        def reject(reason: str, detail: str, i: int = i) -> None:
            out[REJECT_REASON][i], out[REJECT_DETAIL][i] = reason, detail
            if reason == "not_selected":
                for k, v in SLIMMED.items():
                    out[k][i] = v

        if not selected(select, source, task):
            reject("not_selected", f"source {source!r}, task {task!r}")
            continue
        pair = locate(pid, batch["conversations"][i] or [], turns_in[i], seed, max_chars)
        if not isinstance(pair, Located):
            reject(pair.reason, pair.detail)
            continue
        rng = pair.rng()
        # captions+boxes describe the whole image: only a detailed description may be the
        # target of the boxes family (not a QA answer about the same image)
        has_boxes = task == "detail" and boxes[i] is not None
        if quotas is not None:
            quota = assign(quotas, select_key(seed, pid), source, task, has_boxes)
            if quota is None:
                pools = [q.label for q in quotas if q.holds(source, task, has_boxes)]
                reject("not_selected", f"beyond target(s) {', '.join(pools)}" if pools else
                       f"no target for source {source!r}, task {task!r}")
                continue
            family, out["target"][i] = quota.family, quota.label
        else:
            weights = _weights(mixture, source, bool(batch_images(batch, i)), has_boxes,
                               llm_enabled)
            family = choose_family(weights, rng)
            if family is None:
                reject("no_family", f"no distortion family is allowed for source {source!r} "
                       "(is the LLM engine configured?)")
                continue
            out["target"][i] = "mixture"
        style = pick_style(rng)[0] if family == "llm" else None
        out["family"][i], out["style"][i], out["seed"][i] = family, style, pair.seed
        out["turn"][i], out["instruction"][i] = pair.turn, pair.instruction
        out["original"][i] = pair.original
    return out


def cpu_families(batch: Batch) -> Batch:
    """Distort ``augment`` and ``boxes`` rows (LLM rows are left to the engine step)."""
    n = len(batch["id"])
    out: Batch = {"distorted": list(batch.get("distorted") or [None] * n),
                  "style": list(batch["style"]), REJECT_REASON: [None] * n,
                  REJECT_DETAIL: [None] * n}
    for i in range(n):
        family = batch["family"][i]
        if family == "augment":
            rng = random.Random(batch["seed"][i] ^ 0x5EED)
            text, ops = augment_until_changed(batch["original"][i], rng)
            out["style"][i] = "+".join(ops) or "none"
            if not text.strip() or text == batch["original"][i]:
                out[REJECT_REASON][i] = "augment_unchanged" if text.strip() else "augment_empty"
                out[REJECT_DETAIL][i] = f"ops applied: {ops}"
                continue
            out["distorted"][i] = text
        elif family == "boxes":
            data = json.loads(batch["captions_boxes"][i])
            out["distorted"][i] = serialise(data["captions"], data["boxes"])
            out["style"][i] = "captions_boxes"
    return out


class LLMDistort:
    """The LLM family: one engine per actor, batched generation, checked outputs."""

    name = "llm_distort"
    inputs = ("id", "family", "style", "instruction", "original", "distorted")
    outputs = ("distorted",)
    resources = Resources()

    def __init__(self, engine_factory: Any, params: GenParams, reject_longer: bool = False):
        self.engine: TextEngine = engine_factory()
        self.params = params
        self.reject_longer = reject_longer

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out: Batch = {"distorted": list(batch["distorted"]), REJECT_REASON: [None] * n,
                      REJECT_DETAIL: [None] * n}
        idx = [i for i in range(n) if batch["family"][i] == "llm"]
        if not idx:
            return out
        prompts = [build_messages(batch["instruction"][i], batch["original"][i],
                                  STYLE_BY_NAME.get(batch["style"][i] or "", ""))
                   for i in idx]
        results = self.engine.generate(prompts, self.params)
        for i, result in zip(idx, results, strict=True):
            if result.reject is not None:  # the endpoint refused this request (a 4xx)
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = result.reject
                continue
            text = result.text
            reason = check_output(batch["original"][i], text, reject_longer=self.reject_longer)
            if reason:
                out[REJECT_REASON][i], out[REJECT_DETAIL][i] = reason, text[:500]
            else:
                out["distorted"][i] = text
        return out


class AttachCaptionsBoxes:
    """Join captions + boxes (from a dataset of ``captions`` rows with boxes) on the image.

    Loads the lookup once per actor: image key -> ``{"captions": [...], "boxes": [...]}``.
    Rows whose source gave no captions/boxes keep ``captions_boxes`` = None.
    """

    name = "attach_captions_boxes"
    inputs = ("id", "image")
    outputs = ("captions_boxes",)
    resources = Resources(num_cpus=1, batch_size=1024)

    def __init__(self, root: str, storage: Any):
        self.index = captions_boxes_index(root, storage)

    def __call__(self, batch: Batch) -> Batch:
        return {"captions_boxes": [self.index.get(image_key(r) or "") for r in batch["image"]]}
