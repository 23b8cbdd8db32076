"""The distortion steps: plan each pair, apply the CPU families, run the LLM family.

All random choices of a row come from ``row_seed(job seed, id)``, so a rerun reproduces
every pair byte for byte (the LLM family too, with greedy decoding on the same batches).
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from pf_ray.distort.augment import augment
from pf_ray.distort.boxes import serialise
from pf_ray.distort.llm_instructed import build_messages, check_output, pick_style
from pf_ray.distort.spec import MixtureConfig, SelectConfig
from pf_ray.distort.styles import STYLE_BY_NAME
from pf_ray.llm.engines import GenParams, TextEngine
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch, Resources


def row_seed(seed: int, sample_id: str) -> int:
    """A 63-bit seed from the job seed and the sample id."""
    digest = hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def image_key(ref: str | None) -> str | None:
    """The join key of an image: COCO-style numeric id, or the whole synthetic reference.

    ``COCO_train2014_000000215677.jpg``, ``000000215677.jpg`` and ``train2017/215677.jpg``
    all give ``"215677"``; ``synthetic://0/5?size=64`` gives ``"synthetic://0/5"``.
    """
    if not ref:
        return None
    if ref.startswith("synthetic://"):
        return ref.split("?", 1)[0]
    if ref.startswith("tar://"):
        ref = ref[len("tar://"):].split("::", 1)[0]  # the member's own name
    stem = ref.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    digits = "".join(ch if ch.isdigit() else " " for ch in stem).split()
    return str(int(max(digits, key=len))) if digits else ref


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
               llm_enabled: bool, max_chars: int) -> Batch:
    """Pick the turn to distort, the family and (LLM) the style of every row."""
    n = len(batch["id"])
    out: Batch = {k: [None] * n for k in ("family", "style", "seed", "turn", "instruction",
                                          "original", REJECT_REASON, REJECT_DETAIL)}
    for i in range(n):
        sid, source, task = batch["id"][i], batch["source"][i], batch["task"][i]

        def reject(reason: str, detail: str, i: int = i) -> None:
            out[REJECT_REASON][i], out[REJECT_DETAIL][i] = reason, detail

        if (select.sources is not None and source not in select.sources) or (
                select.tasks is not None and task not in select.tasks):
            reject("not_selected", f"source {source!r}, task {task!r}")
            continue
        turns = batch["conversations"][i] or []
        candidates = [k for k, t in enumerate(turns) if t["role"] == "assistant"
                      and any(u["role"] == "user" for u in turns[:k])]
        if not candidates:
            reject("no_assistant_turn", "no assistant turn after a user turn")
            continue
        s = row_seed(seed, sid)
        rng = random.Random(s)
        k = rng.choice(candidates)
        original = turns[k]["content"]
        instruction = next(t["content"] for t in reversed(turns[:k]) if t["role"] == "user")
        if not original.strip() or not instruction.strip():
            reject("empty_text", f"turn {k} or its instruction is empty")
            continue
        if len(original) > max_chars:
            reject("text_too_long", f"{len(original)} characters > max_chars {max_chars}")
            continue
        # captions+boxes describe the whole image: only a detailed description may be the
        # target of the boxes family (not a QA answer about the same image)
        has_boxes = task == "detail" and batch.get("captions_boxes", [None] * n)[i] is not None
        weights = _weights(mixture, source, batch["image"][i] is not None
                           or batch["image_bytes"][i] is not None, has_boxes, llm_enabled)
        family = choose_family(weights, rng)
        if family is None:
            reject("no_family", f"no distortion family is allowed for source {source!r} "
                   "(is the LLM engine configured?)")
            continue
        style = pick_style(rng)[0] if family == "llm" else None
        out["family"][i], out["style"][i], out["seed"][i] = family, style, s
        out["turn"][i], out["instruction"][i], out["original"][i] = k, instruction, original
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
            text, ops = augment(batch["original"][i], rng)
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

    def __init__(self, engine_factory: Any, params: GenParams):
        self.engine: TextEngine = engine_factory()
        self.params = params

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
        texts = self.engine.generate(prompts, self.params)
        for i, text in zip(idx, texts, strict=True):
            reason = check_output(batch["original"][i], text)
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
        from pf_ray.data.io import Dataset

        table = Dataset(root, storage).read(columns=["image", "boxes", "meta"])
        self.index: dict[str, str] = {}
        for ref, boxes, meta in zip(*(table.column(c).to_pylist() for c in (
                "image", "boxes", "meta")), strict=True):
            captions = json.loads(meta).get("captions")
            key = image_key(ref)
            if key and boxes and captions:
                self.index[key] = json.dumps({"captions": captions, "boxes": boxes},
                                             sort_keys=True)

    def __call__(self, batch: Batch) -> Batch:
        return {"captions_boxes": [self.index.get(image_key(r) or "") for r in batch["image"]]}
