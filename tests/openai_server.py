"""A real OpenAI-compatible completions server on 127.0.0.1 over a transformers model.

Used by the tests of the ``http`` engine (FastAPI + uvicorn in a thread of the test
process; Ray workers reach it over real HTTP).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from pf_ray.engines.base import GenParams
from pf_ray.engines.text import HFEngine


class CompletionRequest(BaseModel):
    model: str
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] | str | None = None
    seed: int | None = None


def make_app(engine: HFEngine, model_name: str) -> FastAPI:
    app = FastAPI()
    lock = threading.Lock()
    app.state.requests = 0

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict[str, Any]:
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        params = GenParams(max_new_tokens=req.max_tokens, temperature=req.temperature,
                           top_p=req.top_p, top_k=req.top_k, stop=stop, seed=req.seed or 0)
        with lock:
            app.state.requests += 1
            texts = engine.complete(prompts, params)
        return {"id": f"cmpl-{time.time_ns()}", "object": "text_completion",
                "model": model_name,
                "choices": [{"index": i, "text": t, "finish_reason": "stop"}
                            for i, t in enumerate(texts)]}

    return app


@dataclass
class Server:
    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(engine: HFEngine, model_name: str = "tiny", port: int | None = None) -> Server:
    return serve_app(make_app(engine, model_name), port)


def serve_app(app: FastAPI, port: int | None = None) -> Server:
    """Run ``app`` on 127.0.0.1 in a thread of this process until it answers."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}/v1", app, server, thread)
