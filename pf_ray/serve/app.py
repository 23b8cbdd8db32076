"""The Ray Serve application: one deployment, a FastAPI ingress, dynamic batching.

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
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException

from pf_ray.serve.api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_response,
    models_response,
    parse,
    usage_chunk,
)
from pf_ray.serve.batching import EMPTY, Batcher, Update
from pf_ray.serve.prepare import Job, Plan, load_job, plan_chat, plan_completion
from pf_ray.serve.spec import ServeSpec

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).parent / "static"
DEPLOYMENT = "CleverFlamingo"

api = FastAPI(title="pf-ray: Clever Flamingo", docs_url=None, redoc_url=None)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes (404), wrong methods (405), ...: an OpenAI-style error object too."""
    if exc.status_code == 404:
        message = f"no route {request.url.path!r}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path!r}"
    else:
        message = str(exc.detail)
    err = APIError(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code))
    return JSONResponse(err.body(), status_code=exc.status_code,
                        headers=dict(exc.headers or {}))


class _ModelError(Exception):
    """Generation failed for a request (its update carried an error)."""


def _request_id() -> str:
    """Serve's id of the request being handled: the ``x-request-id`` header Serve sends back
    and the id in its replica logs, so a 500's id leads to its traceback."""
    try:
        rid = serve.context._get_serve_request_context().request_id
    except Exception:  # private API: fall back to our own
        rid = ""
    return rid or uuid.uuid4().hex


def _error_response(exc: APIError) -> JSONResponse:
    headers: dict[str, str] = {}  # Serve sends x-request-id itself (= rid)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class CleverFlamingo:
    def __init__(self, spec: dict[str, Any]) -> None:
        from pf_ray.serve.engine import Engine

        self.spec = ServeSpec.model_validate(spec)
        self.key: str | None = None
        if self.spec.api_key_env:
            self.key = os.environ.get(self.spec.api_key_env)
            if not self.key:  # fail closed: never serve unprotected by mistake
                raise RuntimeError(f"api_key_env: the variable {self.spec.api_key_env!r} is "
                                   "not set on this replica")
        d = self.spec.deployment
        self.engine = Engine(self.spec.model, storage=self.spec.storage, device=self.spec.device,
                             torch_threads=d.torch_threads, fail_marker=self.spec.fail_marker)
        self.batcher = Batcher(self.engine, self.spec.batching.max_batch_size,
                               self.spec.batching.batch_wait_timeout_s)
        self.created = int(time.time())
        self.page = (STATIC / "index.html").read_text(encoding="utf-8")

    def check_health(self) -> None:  # Serve's replica health check
        if self.engine.model is None:
            raise RuntimeError("model not loaded")

    # ------------------------------------------------------------------ request handling

    def _auth(self, request: Request) -> None:
        if self.key is None:
            return
        header = request.headers.get("authorization", "")
        if not header:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'",
                           code="missing_api_key", type="authentication_error")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.key.encode()):
            raise APIError(401, "invalid API key", code="invalid_api_key",
                           type="authentication_error")

    async def _body(self, request: Request) -> bytes:
        cap = self.spec.limits.max_body_bytes
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > cap:
            raise APIError(413, f"the body is {size} bytes; allowed: at most {cap}",
                           code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise APIError(413, f"the body is over {cap} bytes", code="request_too_large")
        return bytes(body)

    async def _job(self, plan: Plan, rid: str) -> Job:
        return await load_job(plan, rid, self.spec, self.engine.tokenizer, self.engine.mode,
                              self.engine.context_length)

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
            body = await self._body(request)
            if kind == "chat":
                plan = plan_chat(parse(ChatRequest, body), self.spec)
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
        return JSONResponse(build(oid, self.spec.model_name, text, reason, len(job.prompt_ids),
                                  last.completion_tokens))

    async def _stream(self, job: Job, plan: Plan) -> Any:
        updates = self.batcher.generate_batch(job).__aiter__()
        first = await anext(updates)  # an error before the first token is still a plain 500
        if first.error:
            raise _ModelError(first.error)
        model, created, rid = self.spec.model_name, int(time.time()), job.rid
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
        try:
            self._auth(request)
        except APIError as exc:
            return _error_response(exc)
        return models_response(self.spec.model_name, self.created)

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
    if spec.ray.runtime_env:
        actor["runtime_env"] = spec.ray.runtime_env
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": d.max_ongoing_requests or 2 * b.max_batch_size,
        "health_check_period_s": d.health_check_period_s,
    }
    if d.autoscaling is not None:
        a = d.autoscaling
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s}
    else:
        opts["num_replicas"] = d.num_replicas
    return opts


def app_for(spec: ServeSpec) -> Application:
    """The bound application for ``spec``."""
    return CleverFlamingo.options(**deployment_options(spec)).bind(spec.model_dump(mode="json"))
