"""Engine specs shared by every stage that calls an LLM (distort today; rewrite next)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pf_ray.specs import Strict


class SamplingConfig(Strict):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0: off")


class EngineBase(Strict):
    prompt_format: Literal["guanaco", "chat_template"] = Field(
        "guanaco", description="paper's ### Human/### Assistant text, or the model's template")
    batch_size: int = Field(16, ge=1, description="prompts per engine call")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per engine actor")
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class HFEngineConfig(EngineBase):
    """A transformers causal LM in an actor pool."""

    kind: Literal["hf"]
    model: str = Field(..., description="local folder or URI (s3://...) of a HF model")
    gguf_file: str | None = Field(None, description="a GGUF file inside the model folder")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False


class VLLMEngineConfig(EngineBase):
    """vLLM through ``ray.data.llm`` (vLLMEngineProcessorConfig + build_processor)."""

    kind: Literal["vllm"]
    model: str = Field(..., description="model_source: HF folder or URI")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per engine (0: vLLM on CPU)")
    accelerator_type: str | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    separate_cpu_stages: bool = Field(
        True, description="tokenize/detokenize in their own actor pools (off on tiny CPU "
        "machines, where the extra pools can starve the engine of CPUs)")


class HTTPEngineConfig(EngineBase):
    """Any OpenAI-compatible /v1/completions endpoint."""

    kind: Literal["http"]
    base_url: str = Field(..., description="e.g. http://10.0.0.5:8000/v1")
    model: str = Field(..., description="model name the server knows")
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(120.0, gt=0)
    max_concurrency: int = Field(8, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"must start with http:// or https://, received {v!r}")
        return v


EngineConfig = Annotated[HFEngineConfig | VLLMEngineConfig | HTTPEngineConfig,
                         Field(discriminator="kind")]



ENGINE_KINDS = ("hf", "vllm", "http")
