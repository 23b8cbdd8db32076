"""The quickstart's serving check: one image chat through the official ``openai`` client.

:func:`chat_once` deploys a model folder as its own Serve application (next to any other,
under ``/pf-ray-smoke``), sends one streamed image chat, measures the time to the first
token and to the end, deletes the application, and returns the numbers for
``summary.json`` (``serve.ok``, ``serve.first_token_s``, ``serve.total_s``...).
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger(__name__)
APP = "pf-ray-smoke"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_once(model_dir: str, image_png: bytes, question: str, *, max_tokens: int = 32,
              port: int | None = None, cpus_per_replica: float = 0.5,
              spec_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve ``model_dir``, ask ``question`` about ``image_png``, stop; never raises.

    ``spec_fields`` are more serve spec fields (they win over the defaults here), e.g.
    ``{"model": {"family": "hf_vlm", "path": ...}, "engine": "vllm", "python": ...}`` for an
    ``hf_vlm`` export on Ray Serve LLM with the replicas in the vLLM venv's interpreter.

    Returns ``{ok, answer, first_token_s, total_s, startup_s, completion_tokens}`` (``error``
    instead of the numbers when something failed); ``ok`` only with a non-empty answer.
    Uses the running Ray if there is one, else starts a local instance and shuts it down
    afterwards.
    """
    import ray
    from openai import OpenAI
    from ray import serve

    from pf_ray.serve.launch import serve_running, start
    from pf_ray.serve.spec import ServeSpec

    own_ray = not ray.is_initialized()
    own_serve = False
    out: dict[str, Any] = {"ok": False, "answer": None, "first_token_s": None,
                           "total_s": None, "startup_s": None}
    try:
        if own_ray:
            ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False,
                     log_to_driver=False)
        t0 = time.perf_counter()
        # Serve started here is shut down here: a later app on the same cluster then gets
        # the proxy port it asks for (Serve keeps the port it started with)
        own_serve = not serve_running()
        fields: dict[str, Any] = {
            "kind": "serve", "model": str(model_dir), "app_name": APP,
            "route_prefix": f"/{APP}", "port": port or _free_port(),
            "deployment": {"cpus_per_replica": cpus_per_replica}}
        spec = ServeSpec.model_validate({**fields, **(spec_fields or {})})
        url = start(spec)
        out["startup_s"] = round(time.perf_counter() - t0, 3)
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        image = "data:image/png;base64," + base64.b64encode(image_png).decode()
        model = client.models.list().data[0].id  # the trained model (an adapter's name)
        t1 = time.perf_counter()
        stream = client.chat.completions.create(
            model=model, stream=True, temperature=0, max_tokens=max_tokens,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": image}}]}])
        parts: list[str] = []
        first = None
        for chunk in stream:
            if chunk.usage is not None:
                out["completion_tokens"] = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter() - t1
                parts.append(chunk.choices[0].delta.content)
        answer = "".join(parts)
        # an empty answer is no answer: the check passes only when text came back
        out.update(ok=bool(answer.strip()), answer=answer,
                   total_s=round(time.perf_counter() - t1, 3),
                   first_token_s=None if first is None else round(first, 3))
        if not out["ok"]:
            out["error"] = (f"the served model answered with no text "
                            f"({out.get('completion_tokens')} completion tokens)")
    except Exception as exc:
        log.exception("serving check failed")
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            serve.delete(APP)
            if own_ray or own_serve:
                serve.shutdown()
        except Exception:
            pass
        if own_ray and ray.is_initialized():
            ray.shutdown()
    return out
