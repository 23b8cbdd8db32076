"""Engine specs: every block of a spec that says which engine generates text, and how.

Each stage's spec composes these: an :class:`HTTPEndpoint` (any OpenAI-compatible server,
declared once), the :class:`DecodingConfig` of pf-ray's own generator (rewrite, eval), the
text engines of the distortion stage (``hf``, ``vllm``, ``http``), and the engines' actor
pools (:class:`pf_ray.steps.pool.ActorPool`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.specs import BaseURL, Strict
from pf_ray.steps.pool import ActorPool


class HTTPEndpoint(Strict):
    """An OpenAI-compatible server (pf-ray's Serve app, vLLM, a hosted API)."""

    base_url: BaseURL = Field(..., description="e.g. http://10.0.0.5:8000/v1")
    model: str = Field(..., description="model name the server knows")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding "
                             "the API key (sent as a Bearer token when set)")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_concurrency: int = Field(8, ge=1, description="requests in flight per actor")


class SamplingConfig(Strict):
    """How a distortion engine decodes."""
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0: off")


class EngineBase(ActorPool):
    """A text engine of the distortion stage in its actor pool."""

    prompt_format: Literal["guanaco", "chat_template"] = Field(
        "guanaco", description="paper's ### Human/### Assistant text, or the model's template")
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
    python: str | None = Field(
        None, description="the Python that runs the engine actors (Ray runtime_env "
        "py_executable; same Python and Ray versions), e.g. .venv-vllm/bin/python when "
        "vLLM's CPU build lives in its own venv (pf_ray.engines.interpreter); None: the job's")


class HTTPEngineConfig(EngineBase, HTTPEndpoint):
    """Any OpenAI-compatible /v1/completions endpoint."""

    kind: Literal["http"]


EngineConfig = Annotated[HFEngineConfig | VLLMEngineConfig | HTTPEngineConfig,
                         Field(discriminator="kind")]


class DecodingConfig(Strict):
    """How the rewriter decodes (paper.md §4 "Decoding"; the paper gives no settings).

    Defaults are the released dataset-inference script's ([code-v2]
    ``instruction_dataset_inference.py``): greedy, 1 beam, top_p 1, 128 new tokens. The
    released repo's interactive default, for reference: sampling with top_k 20, top_p 0.9,
    temperature 1.0, 3 beams, no_repeat_ngram_size 3, 1024 new tokens.
    """

    max_new_tokens: int = Field(128, ge=1, description="dataset-inference script 128 "
                                "(repo default 1024)")
    do_sample: bool = Field(False, description="false: greedy (dataset-inference script); "
                            "repo default true")
    temperature: float = Field(1.0, gt=0, description="with do_sample (repo default 1.0)")
    top_k: int = Field(0, ge=0, description="0: off (repo default 20)")
    top_p: float = Field(1.0, gt=0, le=1, description="1: off (dataset-inference script 1, "
                         "repo default 0.9)")
    num_beams: int = Field(1, ge=1, le=16, description="dataset-inference script 1 (repo "
                           "default 3); >1 only with the flamingo engine, without do_sample")
    length_penalty: float = Field(1.0, description="beam search: score / length ** this")
    no_repeat_ngram_size: int = Field(
        0, description="must be 0: pf-ray's generate has no n-gram blocking (the repo "
        "default is 3); repetition loops are caught by checks.repetition_loop instead")
    seed: int = Field(0, description="sampling seed (each engine call draws from it)")

    @field_validator("no_repeat_ngram_size")
    @classmethod
    def _no_ngram_blocking(cls, v: int) -> int:
        if v != 0:
            raise ValueError(f"received {v}; allowed: 0 (pf_ray.model.generate has no n-gram "
                             "blocking; checks.repetition_loop rejects looping outputs)")
        return v

    @model_validator(mode="after")
    def _beams(self) -> DecodingConfig:
        if self.num_beams > 1 and self.do_sample:
            raise ValueError(f"num_beams {self.num_beams} with do_sample: beam sampling is not "
                             "supported; set do_sample false or num_beams 1")
        return self


class GenerationEngine(ActorPool):
    """An engine block of a spec that generates from prompts (``engine:`` of rewrite): its
    ``kind`` picks the registered engine (:mod:`pf_ray.engines.registry`)."""

    kind: str


class FlamingoModelFields(Strict):
    """Where pf-ray's Flamingo model is and how an actor runs it (the rewrite engine's and
    eval's model source's fields)."""

    model: str = Field(..., description="model folder or URI (s3://...): config.json, "
                       "model.safetensors, adapter/, tokenizer/")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if the "
                                                   "actor sees a GPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the model config's dtype")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per actor")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="longer prompts are rejected (prompt_too_long); None: the "
        "language model's max_position_embeddings minus max_new_tokens")


class FlamingoEngineConfig(GenerationEngine, FlamingoModelFields):
    """pf-ray's Flamingo model (a ``pf-ray convert`` / training export folder) in an actor
    pool, batched generation (each distinct image encoded once per batch)."""

    kind: Literal["flamingo"]


class HTTPEngineSpec(GenerationEngine, HTTPEndpoint):
    """An OpenAI-compatible server: ``completions`` sends the prompt text with its
    ``<image>`` markers and the images as data URIs in ``images`` (pf-ray's Serve app);
    ``chat`` sends a user message of image_url + text parts (generic VLM servers, vLLM)."""

    kind: Literal["http"]
    api: Literal["completions", "chat"] = "completions"
    image_markers: Literal["next_image", "previous_image"] = Field(
        "next_image", description="completions: where the prompt's <image> marker goes (the "
        "model's cross-attention mask; released v1 models: next_image)")
