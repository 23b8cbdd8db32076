"""What stands in front of every engine: the API key, the body cap, OpenAI-shaped errors,
the chat page and the model list (no model, no engine).

:class:`Front` is mixed into each ingress deployment (:class:`pf_ray.serve.app.CleverFlamingo`
for pf-ray's own generators, :class:`pf_ray.serve.llm.VLLMFront` before Ray Serve LLM), so a
request meets the same checks whichever engine answers it; :func:`new_api` makes each its
FastAPI app, whose unknown routes and wrong methods answer in OpenAI's error shape too.
"""

# no `from __future__ import annotations`: FastAPI reads the handler signatures (Request)
import hmac
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pf_ray.serve.api import APIError, models_response
from pf_ray.serve.spec import ServeSpec

STATIC = Path(__file__).parent / "static"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def new_api(title: str) -> FastAPI:
    """A FastAPI app whose unknown routes (404) and wrong methods (405) answer with an
    OpenAI-style error object."""
    api = FastAPI(title=title, docs_url=None, redoc_url=None)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.url.path!r}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path!r}"
        else:
            message = str(exc.detail)
        err = APIError(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code))
        return JSONResponse(err.body(), status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    return api


def request_id() -> str:
    """Serve's id of the request being handled: the ``x-request-id`` header Serve sends back
    and the id in its replica logs, so a 500's id leads to its traceback."""
    try:
        from ray import serve

        rid = serve.context._get_serve_request_context().request_id
    except Exception:  # private API: fall back to our own
        rid = ""
    return rid or uuid.uuid4().hex


def error_response(exc: APIError) -> JSONResponse:
    headers: dict[str, str] = {}  # Serve sends x-request-id itself (= rid)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class Front:
    """The checks and routes every ingress shares; ``served`` lists the model names."""

    spec: ServeSpec
    served: tuple[str, ...]

    def _init_front(self, spec: dict[str, Any]) -> None:
        self.spec = ServeSpec.model_validate(spec)
        self.key: str | None = None
        if self.spec.api_key_env:
            self.key = os.environ.get(self.spec.api_key_env)
            if not self.key:  # fail closed: never serve unprotected by mistake
                raise RuntimeError(f"api_key_env: the variable {self.spec.api_key_env!r} is "
                                   "not set on this replica")
        self.served = (self.spec.model_name,)
        self.created = int(time.time())
        self.page = (STATIC / "index.html").read_text(encoding="utf-8")

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

    def _models(self, request: Request) -> Any:
        """``GET /v1/models``: the served names, the one a chat page should pick first."""
        try:
            self._auth(request)
        except APIError as exc:
            return error_response(exc)
        out = models_response(self.served[0], self.created)
        for name in self.served[1:]:
            out["data"] += models_response(name, self.created)["data"]
        return out
