"""``kind: distort``: pf-ray sample datasets -> rewriter training pairs.

Units are the committed shard files of the input datasets (one output shard each). Steps:
check images -> join captions+boxes (optional) -> plan pairs -> CPU families (tasks) ->
LLM family (an actor pool for ``hf`` / ``http``; ``ray.data.llm`` for ``vllm``).
"""

from __future__ import annotations

import posixpath
from functools import partial
from typing import Any

import pyarrow.parquet as pq

from pf_ray.config import DistortJob, HFEngineConfig, HTTPEngineConfig, StorageConfig, spec_hash
from pf_ray.data.io import Dataset, resolve
from pf_ray.data.jobs import check_images_step
from pf_ray.data.shard_job import ShardJob, Unit, safe_key
from pf_ray.distort.pairs import AttachCaptionsBoxes, LLMDistort, cpu_families, plan_pairs
from pf_ray.llm.engines import GenParams, HFEngine, HTTPEngine
from pf_ray.steps.base import Batch, Resources, StepDef

SAMPLE_COLUMNS = ("id", "source", "task", "image", "image_bytes", "conversations", "boxes",
                  "meta")


def read_shard(*, file: str, storage: dict[str, Any]) -> Batch:
    """One committed shard file of a pf-ray sample dataset, as a batch."""
    fs, path = resolve(file, StorageConfig(**storage))
    return pq.read_table(path, filesystem=fs, columns=list(SAMPLE_COLUMNS)).to_pydict()


def input_units(inputs: list[str], storage: StorageConfig) -> list[Unit]:
    units = []
    for k, root in enumerate(inputs):
        ds = Dataset(root, storage)
        files = ds.shard_files()
        if not files:
            raise FileNotFoundError(f"inputs.{k}: {root} holds no committed shards")
        for f in files:
            stem = posixpath.basename(f).removesuffix(".parquet")
            uri = f if not root.startswith(("s3://", "s3a://")) else \
                f"{root.split('://', 1)[0]}://{f}"
            units.append(Unit(safe_key(f"i{k}-{stem}"),
                              {"file": uri, "storage": storage.model_dump()}))
    return units


def engine_factory(cfg: HFEngineConfig | HTTPEngineConfig, storage: StorageConfig) -> Any:
    if isinstance(cfg, HFEngineConfig):
        return partial(HFEngine, model=cfg.model, gguf_file=cfg.gguf_file,
                       prompt_format=cfg.prompt_format, dtype=cfg.dtype,
                       trust_remote_code=cfg.trust_remote_code, storage=storage)
    return partial(HTTPEngine, base_url=cfg.base_url, model=cfg.model,
                   prompt_format=cfg.prompt_format, api_key_env=cfg.api_key_env,
                   timeout_s=cfg.timeout_s, max_concurrency=cfg.max_concurrency)


def gen_params(spec: DistortJob) -> GenParams:
    s = spec.engine.sampling  # type: ignore[union-attr]
    return GenParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                     top_k=s.top_k, seed=spec.seed)


def distort_job(spec: DistortJob) -> ShardJob:
    steps: list[StepDef] = []
    if spec.images.check:
        steps.append(check_images_step(spec.images, spec.storage))
    if spec.boxes_from:
        steps.append(StepDef(AttachCaptionsBoxes.name, AttachCaptionsBoxes,
                             AttachCaptionsBoxes.inputs, AttachCaptionsBoxes.outputs,
                             AttachCaptionsBoxes.resources,
                             {"root": spec.boxes_from, "storage": spec.storage}))
    plan_inputs = ("id", "source", "task", "conversations", "image", "image_bytes")
    steps.append(StepDef(
        "plan_pairs", plan_pairs,
        plan_inputs + (("captions_boxes",) if spec.boxes_from else ()),
        ("family", "style", "seed", "turn", "instruction", "original"),
        Resources(batch_size=1024),
        {"seed": spec.seed, "mixture": spec.mixture, "select": spec.select,
         "llm_enabled": spec.engine is not None, "max_chars": spec.max_chars}))
    steps.append(StepDef("cpu_families", cpu_families,
                         ("id", "family", "style", "seed", "original")
                         + (("captions_boxes",) if spec.boxes_from else ()),
                         ("distorted", "style"), Resources(batch_size=1024)))
    if spec.engine is not None and spec.engine.kind in ("hf", "http"):
        e = spec.engine
        steps.append(StepDef(LLMDistort.name, LLMDistort, LLMDistort.inputs, LLMDistort.outputs,
                             Resources(num_cpus=e.num_cpus, num_gpus=e.num_gpus,
                                       batch_size=e.batch_size, min_actors=e.min_actors,
                                       max_actors=e.max_actors),
                             {"engine_factory": engine_factory(e, spec.storage),
                              "params": gen_params(spec)}))
    job = ShardJob(kind="distort", spec_hash=spec_hash(spec),
                   spec=spec.model_dump(mode="json"), units=input_units(spec.inputs, spec.storage),
                   reader=read_shard, output=spec.output, storage=spec.storage, steps=steps,
                   schema="pair")
    if spec.engine is not None and spec.engine.kind == "vllm":
        from pf_ray.llm.vllm_stage import vllm_distort_stage

        job.ray_stage = partial(vllm_distort_stage, cfg=spec.engine, params=gen_params(spec))
    return job
