"""HTTP engines: which 4xx replies are the endpoint's fault (fail the job) and which are the
row's (rejects), and the image encodings sent to a server."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from pf_ray.engines.base import GenParams
from pf_ray.engines.config import DecodingConfig, HTTPEngineSpec
from pf_ray.engines.http import HTTPEngine, HTTPRequestError, sendable
from pf_ray.faults import EngineUnavailable, is_infrastructure_fault
from pf_ray.rewrite.engines import Request, Rewriter

REPLY: dict[str, tuple[int, Any]] = {}  # path -> (status, JSON body or raw bytes)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status, body = REPLY[self.path]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        cut = data == b"CUT"  # the server dies half-way through the reply
        self.send_header("content-length", str(len(data) + 100 * cut))
        if 300 <= status < 400:
            self.send_header("location", "http://127.0.0.1:9/elsewhere")
        self.end_headers()
        self.wfile.write(data)
        if cut:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _error(code: str | None) -> dict[str, Any]:
    return {"error": {"message": "no", "type": "invalid_request_error", "param": None,
                      "code": code}}


@pytest.mark.parametrize("status", [301, 307, 401, 402, 403, 404, 405, 407, 408, 429, 500, 503])
def test_endpoint_statuses_are_infrastructure_faults(base_url: str, status: int) -> None:
    REPLY["/v1/completions"] = (status, _error(None))
    engine = HTTPEngine(base_url=base_url, model="m", retries=0)
    with pytest.raises(EngineUnavailable) as info:
        engine.complete_one("hi", GenParams())
    assert f"{base_url}/completions" in str(info.value) and f"HTTP {status}" in str(info.value)
    assert is_infrastructure_fault(info.value)


@pytest.mark.parametrize(("status", "code"), [(400, None), (413, None), (422, "bad"),
                                              (400, "context_length_exceeded")])
def test_other_4xx_are_row_faults(base_url: str, status: int, code: str | None) -> None:
    REPLY["/v1/completions"] = (status, _error(code))
    with pytest.raises(HTTPRequestError) as info:
        HTTPEngine(base_url=base_url, model="m", retries=0).complete_one("hi", GenParams())
    assert info.value.status == status and info.value.code == (code or "")
    assert not is_infrastructure_fault(info.value)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", b"<html>502 Bad Gateway</html>"),  # a proxy's page, not JSON
    ("/v1/completions", [1, 2]),  # JSON, but no object
    ("/v1/completions", {"id": "x", "object": "text_completion"}),  # no choices
    ("/v1/chat/completions", {"choices": [{"text": "not a chat choice"}]}),
])
def test_a_200_that_is_no_reply_is_an_infrastructure_fault(base_url: str, path: str,
                                                           body: Any) -> None:
    REPLY[path] = (200, body)
    engine = HTTPEngine(base_url=base_url, model="m", retries=0)
    with pytest.raises(EngineUnavailable, match="HTTP 200 but") as info:
        if path.endswith("chat/completions"):
            engine.chat_one([{"role": "user", "content": "hi"}], GenParams())
        else:
            engine.complete_one("hi", GenParams())
    assert is_infrastructure_fault(info.value)
    # and never a row's reject: the rewriter raises it
    with pytest.raises(EngineUnavailable):
        _rewriter(base_url, "chat" if path.endswith("chat/completions") else "completions"
                  ).rewrite([Request("Q?", "draft")])


def test_a_reply_cut_short_is_an_infrastructure_fault(base_url: str) -> None:
    REPLY["/v1/completions"] = (200, b"CUT")
    with pytest.raises(EngineUnavailable, match="IncompleteRead"):
        HTTPEngine(base_url=base_url, model="m", retries=0).complete_one("hi", GenParams())


def test_distortion_rejects_the_row_on_a_request_4xx(base_url: str) -> None:
    """The distort step over HTTP: a 4xx about one request is that row's ``http_<status>``
    reject (not a bisected ``exception``), the other rows keep their texts."""
    from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON
    from pf_ray.distort.pairs import LLMDistort

    step = LLMDistort(lambda: HTTPEngine(base_url=base_url, model="m", retries=0),
                      GenParams(max_new_tokens=8))
    batch = {"id": ["a"], "family": ["llm"], "style": [""], "instruction": ["Q?"],
             "original": ["The answer is a red square on a white ground."],
             "distorted": [None]}
    REPLY["/v1/completions"] = (422, _error(None))
    out = step(batch)
    assert out[REJECT_REASON] == ["http_422"] and "HTTP 422" in out[REJECT_DETAIL][0]
    REPLY["/v1/completions"] = (200, {"choices": [{"text": " a red square",
                                                   "finish_reason": "stop"}]})
    out = step(batch)
    assert out[REJECT_REASON] == [None] and out["distorted"] == ["a red square"]


def _rewriter(base_url: str, api: str) -> Rewriter:
    cfg = HTTPEngineSpec(kind="http", api=api, base_url=base_url, model="m")
    return Rewriter(cfg, prompt_format="paper", decoding=DecodingConfig())


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_rewriter_rejects_the_row_on_a_request_4xx(base_url: str, api: str) -> None:
    path = "/v1/completions" if api == "completions" else "/v1/chat/completions"
    rw = _rewriter(base_url, api)
    REPLY[path] = (422, _error(None))
    (res,) = rw.rewrite([Request("Q?", "draft")])
    assert res.reject is not None and res.reject[0] == "http_422" and "HTTP 422" in res.reject[1]
    REPLY[path] = (400, _error("context_length_exceeded"))
    (res,) = rw.rewrite([Request("Q?", "draft")])
    assert res.reject is not None and res.reject[0] == "prompt_too_long"
    REPLY[path] = (401, _error("invalid_api_key"))
    with pytest.raises(EngineUnavailable, match="HTTP 401"):
        rw.rewrite([Request("Q?", "draft")])


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (6, 4), "red").save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                           ("WEBP", "image/webp"), ("GIF", "image/gif"),
                                           ("BMP", "image/bmp")])
def test_served_formats_are_sent_as_stored(fmt: str, mime: str) -> None:
    data = _encoded(fmt)
    assert sendable(data) == (data, mime)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM"])
def test_other_formats_are_reencoded_to_png(fmt: str) -> None:
    data, mime = sendable(_encoded(fmt))
    img = Image.open(io.BytesIO(data))
    assert mime == "image/png" and img.format == "PNG" and img.size == (6, 4)
    assert img.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
