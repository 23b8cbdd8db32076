"""The cases both hf_vlm engines answer alike (``engine: vllm`` in ``tests/vllm``, ``engine:
hf_vlm`` in ``tests/integration``): each test module serves one application as ``served``
(:func:`serve_spec` is its spec) and imports these tests.

Weights are random: the tests check token counts, finish reasons, usage and that answers
agree or differ, never what the text says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serve_support import CountingServer, data_uri, free_port, png_bytes

KEY = "sk-test-" + "v" * 24
KEY_ENV = "PF_RAY_TEST_VLM_KEY"
MODEL = "smol"
ADAPTER = f"{MODEL}:adapter"
MAX_TOKENS = 8  # limits.default_max_tokens


@dataclass
class Served:
    url: str
    allowed: CountingServer
    other: CountingServer
    png: bytes

    def post(self, path: str, body: Any, key: str | None = KEY) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=300)

    def client(self, key: str = KEY) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)


def serve_spec(folder: Path, engine: str, allowed: CountingServer,
               **more: Any) -> dict[str, Any]:
    """The served spec: a key, small limits, one allowed image host."""
    return {
        "kind": "serve", "model": {"family": "hf_vlm", "path": str(folder)},
        "engine": engine, "model_name": MODEL, "app_name": f"pf-ray-{engine}-test",
        "port": free_port(), "api_key_env": KEY_ENV,
        "ray": {"runtime_env": {"env_vars": {KEY_ENV: KEY}}},
        "limits": {"max_images": 2, "max_tokens": 32, "default_max_tokens": MAX_TOKENS,
                   "max_image_bytes": 100_000, "max_image_pixels": 200 * 200},
        "image_fetch": {"allowed_hosts": [f"127.0.0.1:{allowed.port}"], "timeout_s": 5},
        **more}


def image_servers() -> tuple[CountingServer, CountingServer, bytes]:
    """(allowed, other, the PNG both serve at /img.png)."""
    image = png_bytes((10, 200, 30))
    return (CountingServer({"/img.png": (200, {"Content-Type": "image/png"}, image)}),
            CountingServer({"/img.png": (200, {"Content-Type": "image/png"}, image)}), image)


def image_chat(url: str, text: str = "What is in the image?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


def test_image_chat_through_the_openai_client(served: Served) -> None:
    client = served.client()
    r = client.chat.completions.create(model=MODEL, messages=image_chat(data_uri(served.png)),
                                       temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason in ("length", "stop") and r.model == MODEL
    assert 1 <= r.usage.completion_tokens <= MAX_TOKENS  # limits.default_max_tokens applied
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == MAX_TOKENS
    text_only = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=2,
        messages=[{"role": "user", "content": "What is in the image?"}])
    # the image's tokens are in the prompt (4 image tokens and their markers)
    assert r.usage.prompt_tokens >= text_only.usage.prompt_tokens + 4


def test_streaming_with_usage(served: Served) -> None:
    client = served.client()
    messages = image_chat(data_uri(served.png), "Describe it.")
    plain = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                           max_tokens=12)
    stream = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                            max_tokens=12, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # greedy: streaming changes nothing
    assert sum(1 for c in chunks if c.choices) >= 3  # role, content..., finish


def test_the_api_key(served: Served) -> None:
    from openai import AuthenticationError

    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert error_of(served.post("/v1/chat/completions", body, key=None),
                    401)["code"] == "missing_api_key"
    err = error_of(served.post("/v1/chat/completions", body, key="sk-wrong"), 401)
    assert err["code"] == "invalid_api_key" and err["type"] == "authentication_error"
    assert served.post("/v1/models", None, key="sk-wrong").status_code in (401, 405)
    with pytest.raises(AuthenticationError):
        served.client("sk-wrong").models.list()


def test_image_urls_allow_list(served: Served) -> None:
    body = {"model": MODEL, "temperature": 0, "messages": image_chat(
        f"http://127.0.0.1:{served.other.port}/img.png")}
    err = error_of(served.post("/v1/chat/completions", body), 400)
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert err["code"] == "image_host_not_allowed"
    assert f"127.0.0.1:{served.other.port}" in err["message"]
    assert f"127.0.0.1:{served.allowed.port}" in err["message"]  # what is allowed
    assert served.other.hits == []  # never fetched
    body["messages"] = image_chat("file:///etc/passwd")
    assert error_of(served.post("/v1/chat/completions", body),
                    400)["code"] == "unsupported_image_url"
    # an allowed host: fetched by the front, sent on as the same bytes (the same answer)
    body["messages"] = image_chat(f"http://127.0.0.1:{served.allowed.port}/img.png")
    fetched = served.post("/v1/chat/completions", body)
    assert fetched.status_code == 200, fetched.text
    assert served.allowed.hits == ["/img.png"]
    body["messages"] = image_chat(data_uri(served.png))
    inline = served.post("/v1/chat/completions", body).json()
    assert fetched.json()["choices"][0]["message"] == inline["choices"][0]["message"]
    assert fetched.json()["usage"] == inline["usage"]


def test_limits_and_refusals(served: Served) -> None:
    uri = data_uri(served.png)
    three = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}] * 3
              + [{"type": "text", "text": "compare"}]}]
    err = error_of(served.post("/v1/chat/completions", {"model": MODEL, "messages": three}), 400)
    assert err["code"] == "too_many_images" and "at most 2" in err["message"]
    err = error_of(served.post("/v1/chat/completions", {
        "model": MODEL, "max_tokens": 33, "messages": image_chat(uri)}), 400)
    assert err["param"] == "max_tokens" and "at most 32" in err["message"]
    err = error_of(served.post("/v1/chat/completions", {
        "model": MODEL, "messages": image_chat(data_uri(png_bytes((1, 2, 3), size=300)))}), 413)
    assert err["param"] == "messages[0].content[1].image_url.url"
    err = error_of(served.post("/v1/chat/completions", {
        "model": MODEL, "temperature": "0", "messages": image_chat(uri)}), 400)
    assert err["param"] == "temperature"
    err = error_of(served.post("/v1/chat/completions", {
        "model": "gpt-4o", "messages": image_chat(uri)}), 404)
    assert err["param"] == "model" and repr(ADAPTER) in err["message"]
    err = error_of(served.post("/v1/completions", {"model": MODEL, "prompt": "hi"}), 404)
    assert "/v1/chat/completions" in err["message"]
    # over the context (vLLM's max_model_len 512 / the tiny LM's 1024): OpenAI's shape
    err = error_of(served.post("/v1/chat/completions", {
        "model": MODEL, "max_tokens": 32,
        "messages": [{"role": "user", "content": "one two three " * 400}]}), 400)
    assert err["message"]


def test_the_adapter_by_name(served: Served) -> None:
    client = served.client()
    assert [m.id for m in client.models.list().data] == [ADAPTER, MODEL]
    messages = image_chat(data_uri(served.png))
    base = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                          max_tokens=12)
    tuned = client.chat.completions.create(model=ADAPTER, messages=messages, temperature=0,
                                           max_tokens=12)
    assert tuned.model == ADAPTER and tuned.usage.prompt_tokens == base.usage.prompt_tokens
    assert tuned.choices[0].message.content != base.choices[0].message.content
    again = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                           max_tokens=12)
    assert again.choices[0].message.content == base.choices[0].message.content


def test_the_chat_page_and_its_request_shape(served: Served) -> None:
    """What static/index.html does: GET the page, GET v1/models, POST the conversation with
    stream, temperature and max_tokens from its inputs, read the SSE events."""
    import httpx

    page = httpx.get(served.url + "/", timeout=60)
    assert page.status_code == 200 and "v1/chat/completions" in page.text
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    models = httpx.get(served.url + "/v1/models", headers=headers, timeout=60).json()
    model = models["data"][0]["id"]
    assert model == ADAPTER  # the page chats with the trained model

    def send(messages: list[dict[str, Any]]) -> tuple[str, str | None]:
        body = {"model": model, "messages": messages, "stream": True,
                "temperature": float("0.7"), "max_tokens": int("16")}
        answer, finish = "", None
        with httpx.stream("POST", served.url + "/v1/chat/completions", headers=headers,
                          content=json.dumps(body), timeout=300) as r:
            assert r.status_code == 200, r.read()
            buffer = ""
            for piece in r.iter_text():
                buffer += piece
                while "\n\n" in buffer:
                    event, buffer = buffer.split("\n\n", 1)
                    if not event.startswith("data: ") or event[6:] == "[DONE]":
                        continue
                    chunk = json.loads(event[6:])
                    assert "error" not in chunk, chunk
                    delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
                    answer += delta.get("content") or ""
                    if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                        finish = chunk["choices"][0]["finish_reason"]
        return answer, finish

    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_uri(served.png)}}]}]
    answer, finish = send(messages)
    assert finish in ("length", "stop")
    messages += [{"role": "assistant", "content": answer},
                 {"role": "user", "content": [{"type": "text", "text": "And the colour?"}]}]
    _, finish = send(messages)  # the second turn keeps the first turn's image
    assert finish in ("length", "stop")
