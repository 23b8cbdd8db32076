"""The Ray Serve application: one deployment, a FastAPI ingress, dynamic batching.

The model is pf-ray's Flamingo (``engine: flamingo``) or an ``hf_vlm`` model (``engine:
hf_vlm``, :class:`pf_ray.serve.engine_vlm.VLMEngine`): one engine interface, so everything
below holds for both. ``engine: vllm`` is another application (:mod:`pf_ray.serve.llm`)
behind the same front (:mod:`pf_ray.serve.front`).

Routes (mounted under the spec's ``route_prefix``)::

    GET  /                      the chat page (static/index.html)
    GET  /health                200 once the model is loaded (no key needed)
    GET  /v1/models             the served model id
    POST /v1/chat/completions   OpenAI chat: text + image_url parts, stream (SSE) or not
    POST /v1/completions        OpenAI legacy completions + ``images`` (the rewriter prompt)

Each replica loads the model once (:class:`~pf_ray.serve.engine.Engine`). Requests are
checked, their images loaded and their prompts tokenised on the replica's event loop, then
queued into :meth:`pf_ray.serve.batching.Batcher.generate_batch`, a ``@serve.batch``
**async generator**: Serve gathers up to ``max_batch_size`` requests within
``batch_wait_timeout_s``, the batch decodes together in a worker thread
(:func:`~pf_ray.model.generate.generate_rows`: each request keeps its own max_tokens, stop
strings, temperature and seed), and after every decoding step that brings news (a streamed
text delta, a finished request) the generator yields one update per request. A streaming
request forwards its updates as SSE chunks; a non-streaming one waits for its last. So
streaming and non-streaming requests share batches. A request that arrives while a batch
decodes waits for the next one (no joining mid-decode: that would be continuous batching).

Faults: a batch that fails before its first token is retried one request at a time, so a
request that breaks the model fails alone (a 500 with its request id) and the others are
answered; the replica keeps serving. A replica that dies is restarted by Serve.
"""

# no `from __future__ import annotations`: FastAPI reads the route signatures (Request)
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application

from pf_ray.serve.api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_response,
    parse,
    usage_chunk,
)
from pf_ray.serve.batching import EMPTY, Batcher, Update
from pf_ray.serve.front import Front, error_response, new_api, request_id
from pf_ray.serve.prepare import Job, Plan, load_images, plan_chat, plan_completion, served_models
from pf_ray.serve.spec import ServeSpec

log = logging.getLogger("ray.serve")
DEPLOYMENT = "CleverFlamingo"

api = new_api("pf-ray: Clever Flamingo")
# kept under their old names (tests and tools patch / call them)
_error_response, _request_id = error_response, request_id


class _ModelError(Exception):
    """Generation failed for a request (its update carried an error)."""


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class CleverFlamingo(Front):
    """pf-ray's own generator behind the front: the Flamingo family (``engine: flamingo``)
    or an ``hf_vlm`` model (``engine: hf_vlm``), one engine interface for both."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._init_front(spec)
        d = self.spec.deployment
        kwargs: dict[str, Any] = {"storage": self.spec.storage, "device": self.spec.device,
                                  "torch_threads": d.torch_threads,
                                  "fail_marker": self.spec.fail_marker}
        self.engine: Any
        if self.spec.engine == "hf_vlm":
            from pf_ray.serve.engine_vlm import VLMEngine

            adapter_name = served_models(self.spec, adapter=True)[0]
            self.engine = VLMEngine(self.spec.model, adapter_model=adapter_name, **kwargs)
        else:
            from pf_ray.serve.engine import Engine

            self.engine = Engine(self.spec.model, **kwargs)
        self.served = served_models(self.spec, self.engine.has_adapter)
        self.batcher = Batcher(self.engine, self.spec.batching.max_batch_size,
                               self.spec.batching.batch_wait_timeout_s)

    def check_health(self) -> None:  # Serve's replica health check
        if self.engine.model is None:
            raise RuntimeError("model not loaded")

    # ------------------------------------------------------------------ request handling

    async def _job(self, plan: Plan, rid: str) -> Job:
        return self.engine.job(plan, rid, await load_images(plan, self.spec))

    async def _collect(self, job: Job) -> tuple[str, Update]:
        parts: list[str] = []
        last = EMPTY
        async for u in self.batcher.generate_batch(job):
            if u.error:
                raise _ModelError(u.error)
            parts.append(u.delta)
            if u.finish_reason:
                last = u
        return "".join(parts), last

    async def _handle(self, request: Request, kind: str) -> Any:
        rid = _request_id()
        try:
            self._auth(request)
            if kind != "chat" and self.spec.engine != "flamingo":
                raise APIError(404, "/v1/completions is served for Flamingo models only; use "
                               "/v1/chat/completions", code="not_found")
            body = await self._body(request)
            if kind == "chat":
                plan = plan_chat(parse(ChatRequest, body), self.spec, self.served)
            else:
                plan = plan_completion(parse(CompletionRequest, body), self.spec)
            job = await self._job(plan, rid)
            if plan.stream:
                return await self._stream(job, plan)
            text, last = await self._collect(job)
        except APIError as exc:
            return _error_response(exc)
        except _ModelError:
            return _error_response(APIError(500, f"the model failed on this request (request "
                                                 f"id {rid}); the server keeps serving",
                                            code="model_error"))
        except Exception:  # noqa: BLE001 - a bug must answer as an API error, not a bare 500
            log.exception("request %s failed", rid)
            return _error_response(APIError(500, f"internal error on this request (request "
                                                 f"id {rid}); the server keeps serving",
                                            code="internal_error"))
        reason = last.finish_reason or "length"
        build = chat_response if kind == "chat" else completion_response
        oid = ("chatcmpl-" if kind == "chat" else "cmpl-") + rid
        return JSONResponse(build(oid, plan.model or self.spec.model_name, text, reason,
                                  len(job.prompt_ids), last.completion_tokens))

    async def _stream(self, job: Job, plan: Plan) -> Any:
        updates = self.batcher.generate_batch(job).__aiter__()
        first = await anext(updates)  # an error before the first token is still a plain 500
        if first.error:
            raise _ModelError(first.error)
        model, created, rid = plan.model or self.spec.model_name, int(time.time()), job.rid
        oid = f"chatcmpl-{rid}"

        def sse(obj: dict[str, Any]) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            return sse(chat_chunk(oid, model, created, delta, finish_reason,
                                  include_usage=plan.include_usage))

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            u: Update | None = first
            tokens = 0
            failed = False
            while u is not None:
                if u.error:
                    yield sse(APIError(500, f"the model failed on this request (request id "
                                            f"{rid})", code="model_error").body())
                    failed = True
                    break
                if u.delta:
                    yield chunk({"content": u.delta})
                if u.finish_reason:
                    tokens = u.completion_tokens
                    yield chunk({}, u.finish_reason)
                u = await anext(updates, None)
            if plan.include_usage and not failed:
                yield sse(usage_chunk(oid, model, created, len(job.prompt_ids), tokens))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ routes

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.spec.model_name,
                "batches": self.batcher.batches, "batched_requests": self.batcher.requests}

    @api.get("/v1/models")
    async def models(self, request: Request) -> Any:
        return self._models(request)

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        return await self._handle(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._handle(request, "completion")


# --------------------------------------------------------------------------- building


def deployment_options(spec: ServeSpec) -> dict[str, Any]:
    """Serve deployment options from the spec (replicas or autoscaling, resources)."""
    d, b = spec.deployment, spec.batching
    actor: dict[str, Any] = {"num_cpus": d.cpus_per_replica, "num_gpus": d.gpus_per_replica}
    if d.accelerator_type:
        actor["accelerator_type"] = d.accelerator_type
    runtime_env = dict(spec.ray.runtime_env or {})
    if spec.python:  # the model replicas' interpreter
        runtime_env["py_executable"] = spec.python
    if runtime_env:
        actor["runtime_env"] = runtime_env
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": d.max_ongoing_requests or 2 * b.max_batch_size,
        "health_check_period_s": d.health_check_period_s,
    }
    return {**opts, **d.replica_options()}


def app_for(spec: ServeSpec) -> Application:
    """The bound application for ``spec``: pf-ray's app (engines flamingo and hf_vlm), or
    pf-ray's front before Ray Serve LLM (engine vllm, :mod:`pf_ray.serve.llm`)."""
    if spec.engine == "vllm":
        from pf_ray.serve.llm import vllm_app

        return vllm_app(spec)
    return CleverFlamingo.options(**deployment_options(spec)).bind(spec.model_dump(mode="json"))
