"""``kind: distort``: pf-ray sample datasets -> rewriter training pairs.

Units are the committed shard files of the input datasets (one output shard each); the
reader turns a unit into one row per pair candidate (``pairs_per_conversation``, see
:mod:`pf_ray.data.conversation`). With ``targets``, plan time scans the inputs and sets one
threshold per target (:mod:`targets`). Steps: check images -> join captions+boxes
(optional) -> plan pairs -> CPU families (tasks) -> LLM family (an actor pool for ``hf`` /
``http``; ``ray.data.llm`` for ``vllm``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from pf_ray.data.boxes import captions_boxes_index
from pf_ray.data.conversation import read_pairs
from pf_ray.data.schema import SAMPLE_COLUMNS, Batch
from pf_ray.distort.llm_instructed import build_messages, check_output
from pf_ray.distort.pairs import (
    PAIR_COLUMNS,
    SLIMMED,
    AttachCaptionsBoxes,
    LLMDistort,
    cpu_families,
    plan_pairs,
)
from pf_ray.distort.schema import PAIR_OUTPUT
from pf_ray.distort.spec import DistortSpec
from pf_ray.distort.styles import STYLE_BY_NAME
from pf_ray.distort.targets import Quota, plan_quotas
from pf_ray.engines.text import engine_factory, gen_params
from pf_ray.jobs.inputs import input_units
from pf_ray.jobs.shard import ShardPlan
from pf_ray.specs import spec_hash
from pf_ray.steps.base import Resources, StepDef
from pf_ray.steps.images import check_images_step


def read_shard(*, file: str, storage: dict[str, Any], pairs: str = "one_turn") -> Batch:
    """One committed shard file of a pf-ray sample dataset, one row per pair candidate."""
    return read_pairs(file, storage, pairs, SAMPLE_COLUMNS)


def plan_distort(spec: DistortSpec) -> ShardPlan:
    units = input_units(spec.inputs, spec.storage, spec.pairs_per_conversation)
    quotas: list[Quota] | None = None
    if spec.targets is not None:
        boxes = spec.boxes_from is not None and any(t.family == "boxes" for t in spec.targets)
        keys = frozenset(captions_boxes_index(spec.boxes_from, spec.storage)) if boxes else \
            frozenset()
        quotas = plan_quotas(spec, units, keys)
    steps: list[StepDef] = []
    if spec.images.check:
        steps.append(check_images_step(spec.images, spec.storage))
    if spec.boxes_from:
        steps.append(StepDef(AttachCaptionsBoxes.name, AttachCaptionsBoxes,
                             AttachCaptionsBoxes.inputs, AttachCaptionsBoxes.outputs,
                             AttachCaptionsBoxes.resources,
                             {"root": spec.boxes_from, "storage": spec.storage}))
    plan_inputs = ("id", "source", "task", "turn", "conversations", "image", "image_bytes",
                   "extra_images")
    steps.append(StepDef(
        "plan_pairs", plan_pairs,
        plan_inputs + (("captions_boxes",) if spec.boxes_from else ()),
        PAIR_COLUMNS + tuple(SLIMMED), Resources(batch_size=1024),
        {"seed": spec.seed, "mixture": spec.mixture, "select": spec.select,
         "llm_enabled": spec.engine is not None, "max_chars": spec.max_chars,
         "quotas": quotas}))
    steps.append(StepDef("cpu_families", cpu_families,
                         ("id", "family", "style", "seed", "original")
                         + (("captions_boxes",) if spec.boxes_from else ()),
                         ("distorted", "style"), Resources(batch_size=1024)))
    if spec.engine is not None and spec.engine.kind in ("hf", "http"):
        e = spec.engine
        steps.append(StepDef(LLMDistort.name, LLMDistort, LLMDistort.inputs, LLMDistort.outputs,
                             e.resources(),
                             {"engine_factory": engine_factory(e, spec.storage),
                              "params": gen_params(e.sampling, spec.seed),
                              "reject_longer": spec.llm_reject_longer}))
    recorded = spec.model_dump(mode="json")
    digest = spec_hash(spec)
    if quotas is not None:  # in the manifest: what each target asked, found and took
        recorded["selection"] = [q.report() for q in quotas]
        # the thresholds depend on the inputs: other inputs, other shard names (a resume
        # never mixes pairs chosen under two selections)
        selection = json.dumps(recorded["selection"], sort_keys=True, default=str)
        digest = hashlib.sha256(f"{digest}:{selection}".encode()).hexdigest()[:10]
    plan = ShardPlan(kind="distort", spec_hash=digest, spec=recorded,
                     units=units, reader=read_shard,
                     output=spec.output, storage=spec.storage, steps=steps, schema=PAIR_OUTPUT,
                     faults=spec.faults)
    if spec.engine is not None and spec.engine.kind == "vllm":
        plan.ray_stage = VLLMFamily(spec)
    return plan


# ------------------------------------------------------------ the LLM family on vLLM

# Columns that ride through the engine to the writer (the rest is dropped before it).
CARRIED = ("id", "source", "task", "family", "style", "seed", "turn", "instruction",
           "original", "distorted", "image", "image_bytes", "extra_images", "meta", "target")


def is_llm_row(row: dict[str, Any]) -> bool:
    return row["family"] == "llm"


def llm_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return build_messages(row["instruction"], row["original"],
                          STYLE_BY_NAME.get(row["style"] or "", ""))


def llm_output(row: dict[str, Any], text: str, reject_longer: bool = False
               ) -> tuple[dict[str, Any], str | None]:
    return {"distorted": text}, check_output(row["original"], text, reject_longer=reject_longer)


class VLLMFamily:
    """The plan's Ray Data stage: LLM-family rows through ``ray.data.llm`` (vLLM)."""

    def __init__(self, spec: DistortSpec):
        self.cfg = spec.engine
        self.params = gen_params(spec.engine.sampling, spec.seed)  # type: ignore[union-attr]
        self.reject_longer = spec.llm_reject_longer

    def __call__(self, ds: Any) -> Any:
        from pf_ray.engines.vllm import LLMTask, vllm_stage

        task = LLMTask(stage=LLMDistort.name, carried=CARRIED, select=is_llm_row,
                       messages=llm_messages,
                       on_output=functools.partial(llm_output, reject_longer=self.reject_longer))
        return vllm_stage(ds, task=task, cfg=self.cfg, params=self.params)
