"""The ``http`` answer source against a real local OpenAI-style server: the request it sends
(one image_url part per image, in order, + question), answers cut at the stop strings, a 4xx as that row's reject,
other sources' rows passed through, a dead server as an infrastructure fault."""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from pf_ray.data.images import ImageLoader, synthetic_bytes
from pf_ray.engines.config import DecodingConfig
from pf_ray.eval import answers
from pf_ray.eval.answers import Answer
from pf_ray.eval.spec import HTTPSource
from pf_ray.faults import EngineUnavailable
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            text = body["messages"][-1]["content"][-1]["text"]
            if "too long" in text:
                status, reply = 400, {"error": {"message": "context", "type": "x",
                                                "param": "messages",
                                                "code": "context_length_exceeded"}}
            elif "bad" in text:
                status, reply = 422, {"error": {"message": "no", "type": "x", "param": None,
                                                "code": None}}
            else:
                status, reply = 200, {"choices": [{
                    "message": {"role": "assistant",
                                "content": f" It is red. \n### Human: {text}"},
                    "finish_reason": "stop"}]}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    srv.shutdown()


def step(base_url: str) -> Answer:
    cfg = HTTPSource(kind="http", name="api", base_url=base_url, model="m", max_concurrency=2)
    decoding = DecodingConfig(max_new_tokens=7)
    spec = SimpleNamespace(decoding=decoding)  # what the answerer reads of the eval spec
    return Answer("api", partial(answers._http, cfg, spec),
                  ImageLoader(), needs_bytes=True)


def batch(questions: list[str], answerers: list[str]) -> dict[str, list[Any]]:
    n = len(questions)
    return {"id": [f"q{i}" for i in range(n)], "answerer": answerers,
            "image": ["synthetic://0/3?size=32"] * n, "image_bytes": [None] * n,
            "instruction": questions, "original": ["red"] * n,
            "output": [None if a == "api" else "raw answer" for a in answerers],
            "finish_reason": [None] * n}


def test_answers_rejects_and_passthrough(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    out = step(url)(batch(["What colour?", "a bad one", "far too long", "What colour?"],
                          ["api", "api", "api", "raw"]))
    assert out["output"][:3] == ["It is red.", None, None]
    assert out[REJECT_REASON] == [None, "http_422", "prompt_too_long", None]
    assert out["output"][3] == "raw answer"  # another source's row, untouched
    assert len(seen) == 3
    first = next(b for b in seen if b["messages"][-1]["content"][-1]["text"] == "What colour?")
    image, question = first["messages"][0]["content"]
    assert question == {"type": "text", "text": "What colour?"}
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith(
        "data:image/png;base64,")
    sent = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
    assert sent == synthetic_bytes("synthetic://0/3?size=32")
    assert first["temperature"] == 0.0 and first["max_tokens"] == 7
    assert first["model"] == "m" and len(first["messages"]) == 1  # no system message


def test_a_dead_server_is_an_infrastructure_fault() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineUnavailable):
        step(f"http://127.0.0.1:{port}/v1")(batch(["What colour?"], ["api"]))


def test_two_images_go_as_two_image_url_parts_in_order(
        server: tuple[str, list[dict[str, Any]]], tmp_path: Any) -> None:
    """A change caption's before (by reference) and after (stored bytes) image: two
    image_url parts, in the row's order, then the question."""
    def png(colour: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buf, "PNG")
        return buf.getvalue()

    red, blue = png((220, 20, 20)), png((20, 20, 220))
    (tmp_path / "red.png").write_bytes(red)
    url, seen = server
    rows = batch(["What changed?", "What changed?"], ["api", "api"])
    rows["id"] = ["two", "broken"]
    rows["image"] = [str(tmp_path / "red.png")] * 2
    rows["extra_images"] = [[{"image": None, "image_bytes": blue}],
                            [{"image": str(tmp_path / "gone.png"), "image_bytes": None}]]
    before = len(seen)
    out = step(url)(rows)
    assert out["output"][0] == "It is red." and out[REJECT_REASON][0] is None
    assert out[REJECT_REASON][1] == "image_missing"
    assert out[REJECT_DETAIL][1].startswith("image 2 of 2: ")
    (body,) = seen[before:]  # the row with a missing second image sent nothing
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    sent = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts[:2]]
    assert sent == [red, blue]  # as stored, in order
    assert [Image.open(io.BytesIO(s)).convert("RGB").getpixel((0, 0)) for s in sent] == [
        (220, 20, 20), (20, 20, 220)]
    assert parts[2] == {"type": "text", "text": "What changed?"}
