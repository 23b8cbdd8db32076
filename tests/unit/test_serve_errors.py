"""The Serve app answers every failure with an OpenAI-style error object: unknown routes,
wrong methods, unexpected exceptions; and its usage fields in streams follow OpenAI's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pf_ray.model.generate import GenerationConfig
from pf_ray.serve import app as serve_app
from pf_ray.serve.api import chat_chunk
from pf_ray.serve.batching import Update
from pf_ray.serve.prepare import Job, Plan
from pf_ray.serve.spec import ServeSpec

SPEC = ServeSpec(kind="serve", model="/nowhere")


def asgi(method: str, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request through the FastAPI app (ASGI), as Serve's proxy hands it over."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [], "http_version": "1.1", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1), "root_path": ""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(serve_app.api(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body)


def test_unknown_route_and_wrong_method_are_openai_errors() -> None:
    status, _, body = asgi("GET", "/v1/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert "/v1/nope" in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    status, headers, body = asgi("GET", "/v1/chat/completions")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert headers["allow"] == "POST" and "GET" in body["error"]["message"]


class _Replica:
    """The deployment's request-handling methods on a replica without a model."""

    _cls = serve_app.CleverFlamingo.func_or_class
    _handle, _stream, _auth = _cls._handle, _cls._stream, _cls._auth

    def __init__(self) -> None:
        self.spec, self.key = SPEC, None


def _replica() -> Any:
    return _Replica()


def test_an_unexpected_exception_is_a_500_internal_error() -> None:
    inst = _replica()

    async def broken(request: Any) -> bytes:
        raise KeyError("bug")

    inst._body = broken
    resp = asyncio.run(inst._handle(object(), "chat"))
    body = json.loads(resp.body)
    assert resp.status_code == 500 and body["error"]["code"] == "internal_error"
    assert body["error"]["type"] == "server_error" and "request id" in body["error"]["message"]


class _Batcher:
    def __init__(self, updates: list[Update]) -> None:
        self.updates = updates

    async def generate_batch(self, job: Job) -> AsyncIterator[Update]:
        for u in self.updates:
            yield u


def _events(updates: list[Update], include_usage: bool) -> list[Any]:
    inst = _replica()
    inst.batcher = _Batcher(updates)
    cfg = GenerationConfig()
    job = Job("r1", [1, 2, 3], [], cfg, "hi", stream=True)
    plan = Plan("chat", cfg, [], "hi", stream=True, include_usage=include_usage)

    async def run() -> list[str]:
        resp = await inst._stream(job, plan)
        return [c async for c in resp.body_iterator]

    lines = [e.removeprefix("data: ").strip() for e in asyncio.run(run())]
    return [e if e == "[DONE]" else json.loads(e) for e in lines]


def test_stream_usage_is_null_until_the_usage_chunk() -> None:
    events = _events([Update("Hel"), Update("lo", "stop", 2)], include_usage=True)
    *chunks, final, done = events
    assert done == "[DONE]" and len(chunks) == 4  # role, "Hel", "lo", finish
    assert all("usage" in c and c["usage"] is None for c in chunks)
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 2
    assert final["usage"]["prompt_tokens"] == 3
    plain = _events([Update("Hel"), Update("lo", "stop", 2)], include_usage=False)
    assert all("usage" not in c for c in plain[:-1]) and len(plain) == 5


def test_no_usage_chunk_after_an_error_chunk() -> None:
    events = _events([Update("Hel"), Update(error="r1")], include_usage=True)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "model_error"
    assert not any(isinstance(e, dict) and e.get("choices") == [] for e in events)


def test_chat_chunk_usage_field() -> None:
    assert "usage" not in chat_chunk("i", "m", 0, {})
    assert chat_chunk("i", "m", 0, {}, include_usage=True)["usage"] is None
