"""The ``hf_vlm`` engine: pf-ray's own batched generator over a transformers
image-text-to-text model (:class:`pf_ray.model.hf_vlm.generate.HFVLMGenerator`) in an actor
pool. The same model at vLLM speed is the ``vllm`` engine (:mod:`pf_ray.engines.vllm_vlm`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pf_ray.engines.config import DecodingConfig, FlamingoModelFields, GenerationEngine
from pf_ray.engines.registry import EngineDef
from pf_ray.model.hf_vlm.generate import HFVLMGenerator
from pf_ray.specs import StorageConfig


class HFVLMModelFields(FlamingoModelFields):
    """Where an ``hf_vlm`` model is and how an actor runs it."""

    model: str = Field(..., description="an hf_vlm model folder or URI (a transformers "
                       "save_pretrained folder, optionally with adapter/ from a training "
                       "export) or an hf_vlm preset (tiny-idefics3, smol-vlm, tiny-llava)")


class HFVLMEngineConfig(GenerationEngine, HFVLMModelFields):
    """An ``hf_vlm`` model with pf-ray's batched generator (transformers ``generate``)."""

    kind: Literal["hf_vlm"]


def _build(cfg: HFVLMEngineConfig, decoding: DecodingConfig,
           storage: StorageConfig) -> HFVLMGenerator:
    if decoding.num_beams > 1:
        raise ValueError("engine hf_vlm: decoding.num_beams must be 1")
    return HFVLMGenerator(cfg.model, decoding=decoding, device=cfg.device, dtype=cfg.dtype,
                          num_threads=cfg.num_threads, max_prompt_tokens=cfg.max_prompt_tokens,
                          storage=storage)


ENGINE = EngineDef("hf_vlm", HFVLMEngineConfig, _build,
                   description="an hf_vlm model (transformers), batched in an actor pool")
