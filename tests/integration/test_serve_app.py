"""The served app end to end: one Serve application (2 replicas of a tiny Clever Flamingo
export) for the whole module, driven by the official ``openai`` client, raw HTTP, a headless
Chromium and a replica kill."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from chromium import chromium
from PIL import Image
from serve_support import CountingServer, data_uri, free_port
from serve_support import png_bytes as support_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KEY = "sk-test-" + "x" * 24
KEY_ENV = "PF_RAY_TEST_SERVE_KEY"
APP = "pf-ray-test"
MODEL = "clever-flamingo"
FAIL = "__please_break__"


def png_bytes(colour: tuple[int, int, int], size: int = 48) -> bytes:
    return support_png(colour, size)


@dataclass
class Served:
    url: str
    export: Path
    allowed: CountingServer
    other: CountingServer
    png: bytes

    def post(self, path: str, body: Any, key: str | None = KEY, raw: bytes | None = None,
             timeout: float = 120) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(self.url + path, data=data, headers=headers, timeout=timeout)

    def client(self, key: str = KEY) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)


def build_export(folder: Path) -> Path:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    model = build_model("tiny", seed=0)
    with torch.no_grad():  # open the gates: answers then depend on the images
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(0.5)
    save_pretrained(model, folder, model_tokenizer("tiny"))
    return folder


@pytest.fixture(scope="module")
def served(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    tmp = tmp_path_factory.mktemp("serve")
    export = build_export(tmp / "clever-tiny")
    image = png_bytes((10, 200, 30))
    other = CountingServer({"/img.png": (200, {"Content-Type": "image/png"}, image)})
    allowed = CountingServer({
        "/img.png": (200, {"Content-Type": "image/png"}, image),
        "/redirect.png": (302, {"Location": f"http://127.0.0.1:{other.port}/img.png"}, b""),
    })
    port = free_port()
    spec = ServeSpec(
        kind="serve", model=str(export), app_name=APP, port=port, api_key_env=KEY_ENV,
        fail_marker=FAIL,
        ray={"runtime_env": {"env_vars": {KEY_ENV: KEY}}},
        deployment={"num_replicas": 2, "cpus_per_replica": 0.5, "torch_threads": 1},
        batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
        limits={"max_body_bytes": 400_000, "max_image_bytes": 100_000,
                "max_image_pixels": 200 * 200, "max_messages": 10, "max_tokens": 64,
                "default_max_tokens": 16},
        image_fetch={"allowed_hosts": [f"127.0.0.1:{allowed.port}"], "timeout_s": 5})
    url = start(spec)
    yield Served(url, export, allowed, other, image)
    serve.delete(APP)
    serve.shutdown()
    allowed.stop()
    other.stop()


@pytest.fixture(scope="module")
def reference(served: Served) -> Any:
    """The generator called directly on the same export (what greedy answers must equal)."""
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained
    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import STOP_STRINGS, Turn, encode_chat

    model = load_pretrained(served.export)
    tok = load_folder_tokenizer(served.export)

    def answer(turns: list[Turn], images: list[Image.Image], max_tokens: int) -> dict[str, Any]:
        ids = encode_chat(tok, turns, "next_image").input_ids
        gen = generate(model, tok, [ids], [images],
                       GenerationConfig(max_new_tokens=max_tokens, stop_strings=STOP_STRINGS))[0]
        return {"text": gen.text, "prompt_tokens": len(ids),
                "completion_tokens": len(gen.token_ids) + (gen.finish_reason == "eos"),
                "ids": ids, "gen": gen}

    answer.tok = tok  # type: ignore[attr-defined]
    answer.model = model  # type: ignore[attr-defined]
    return answer


def pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


# --------------------------------------------------------------------------- answers


def test_health_and_models(served: Served) -> None:
    assert requests.get(served.url + "/health", timeout=30).json()["status"] == "ok"
    models = served.client().models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_openai_client_text_image_and_stream(served: Served, reference: Any) -> None:
    from pf_ray.model.prompts import Turn

    client = served.client()
    text = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=12,
        messages=[{"role": "user", "content": "Tell me about flamingos."}])
    ref = reference([Turn("Tell me about flamingos.")], [], 12)
    assert text.choices[0].message.content == ref["text"]
    assert text.usage.prompt_tokens == ref["prompt_tokens"]
    assert text.usage.completion_tokens == ref["completion_tokens"]
    assert text.usage.total_tokens == ref["prompt_tokens"] + ref["completion_tokens"]
    assert text.choices[0].finish_reason == ("length" if ref["gen"].finish_reason == "length"
                                             else "stop")

    question = [{"type": "text", "text": "What is in the picture?"},
                {"type": "image_url", "image_url": {"url": data_uri(served.png)}}]
    img = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=12,
                                         messages=[{"role": "user", "content": question}])
    ref_img = reference([Turn("What is in the picture?", images=1)], [pil(served.png)], 12)
    assert img.choices[0].message.content == ref_img["text"]
    assert img.usage.prompt_tokens == ref_img["prompt_tokens"]
    assert img.usage.completion_tokens == ref_img["completion_tokens"]

    chunks = list(client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": question}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert "".join(deltas) == ref_img["text"]
    assert len(deltas) >= 2  # it streamed, not one block at the end
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and
                c.choices[0].finish_reason]
    assert finishes == [img.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == ref_img["completion_tokens"]
    assert chunks[-1].usage.prompt_tokens == ref_img["prompt_tokens"]


def test_multi_turn_keeps_earlier_images(served: Served, reference: Any) -> None:
    from pf_ray.model.prompts import Turn

    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Look at this."},
                                     {"type": "image_url",
                                      "image_url": {"url": data_uri(served.png)}}]},
        {"role": "assistant", "content": "A green square."},
        {"role": "user", "content": "What colour was it again?"}]
    out = served.client().chat.completions.create(model=MODEL, temperature=0, max_tokens=10,
                                                  messages=messages)
    ref = reference([Turn("Look at this.", "A green square.", images=1),
                     Turn("What colour was it again?")], [pil(served.png)], 10)
    assert out.choices[0].message.content == ref["text"]
    assert out.usage.prompt_tokens == ref["prompt_tokens"]


def test_two_images_in_one_message_reach_the_model_in_order(served: Served,
                                                            reference: Any) -> None:
    """A change caption's before (red) and after (blue) image as two image_url parts of one
    user message: the served greedy answer is the generator's on the same export given one
    human turn with two markers and the images in that order (and the prompt's token count);
    given the images the other way round, the generator answers otherwise."""
    from pf_ray.model.prompts import Turn

    red, blue = png_bytes((220, 20, 20)), png_bytes((20, 20, 220))
    question = [{"type": "text", "text": "What changed between the pictures?"},
                {"type": "image_url", "image_url": {"url": data_uri(red)}},
                {"type": "image_url", "image_url": {"url": data_uri(blue)}}]
    out = served.client().chat.completions.create(
        model=MODEL, temperature=0, max_tokens=12,
        messages=[{"role": "user", "content": question}])
    turn = [Turn("What changed between the pictures?", images=2)]
    ref = reference(turn, [pil(red), pil(blue)], 12)
    swapped = reference(turn, [pil(blue), pil(red)], 12)
    assert ref["ids"].count(reference.tok.convert_tokens_to_ids("<image>")) == 2
    assert ref["gen"].token_ids != swapped["gen"].token_ids  # the answer tells the orders apart
    assert out.choices[0].message.content == ref["text"]
    assert out.usage.prompt_tokens == ref["prompt_tokens"]
    assert out.usage.completion_tokens == ref["completion_tokens"]


def test_completions_endpoint_serves_the_rewriter_prompt(served: Served,
                                                         reference: Any) -> None:
    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import encode_rewrite, rewrite_text

    prompt = rewrite_text("Describe the image.", "green box thing", images=1)
    r = served.post("/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 10,
                                        "temperature": 0, "stop": ["\n###"],
                                        "images": [data_uri(served.png)]})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = encode_rewrite(reference.tok, "Describe the image.", "green box thing").input_ids
    gen = generate(reference.model, reference.tok, [ids], [[pil(served.png)]],
                   GenerationConfig(max_new_tokens=10, stop_strings=("\n###",)))[0]
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == gen.text
    assert body["usage"]["prompt_tokens"] == len(ids)
    assert body["usage"]["completion_tokens"] == len(gen.token_ids) + (gen.finish_reason == "eos")


# --------------------------------------------------------------------------- refusals


def _chat(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw}


def _image_msg(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "what?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_malformed_requests_get_4xx_naming_the_field(served: Served, tmp_path: Path) -> None:
    big_canvas = io.BytesIO()
    Image.new("RGB", (400, 400)).save(big_canvas, "PNG")  # 160k pixels > 40k, small file
    cases: list[tuple[str, bytes | None, dict[str, Any] | None, int, str | None]] = [
        ("malformed JSON", b'{"model": ', None, 400, None),
        ("not an object", b"[]", None, 400, None),
        ("wrong type", None, _chat(max_tokens="12"), 400, "max_tokens"),
        ("wrong type stream", None, _chat(stream=1), 400, "stream"),
        ("unknown role", None, _chat(messages=[{"role": "robot", "content": "x"}]), 400,
         "messages[0].role"),
        ("missing messages", None, {"model": MODEL}, 400, "messages"),
        ("bad part type", None, _chat(messages=[{"role": "user", "content": [
            {"type": "video_url"}]}]), 400, "messages[0].content[0].type"),
        ("unsupported scheme", None, _chat(messages=_image_msg("ftp://127.0.0.1/a.png")), 400,
         "messages[0].content[1].image_url.url"),
        ("bad base64", None, _chat(messages=_image_msg("data:image/png;base64,***")), 400,
         "messages[0].content[1].image_url.url"),
        ("n > 1", None, _chat(n=3), 400, "n"),
        ("max_tokens over the cap", None, _chat(max_tokens=65), 400, "max_tokens"),
        ("too many messages", None, _chat(messages=[{"role": "user", "content": "x"}] * 11),
         400, "messages"),
        ("too many images", None, _chat(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_uri(served.png)}}] * 9}]), 400,
         "messages"),  # limits.max_images: 8 (the default)
        ("temperature out of range", None, _chat(temperature=5), 400, "temperature"),
        ("unknown model", None, _chat(model="gpt-5"), 404, "model"),
        ("image bytes over the cap", None, _chat(messages=_image_msg(
            data_uri(os.urandom(120_000)))), 413, "messages[0].content[1].image_url.url"),
        ("pixels over the cap", None, _chat(messages=_image_msg(
            data_uri(big_canvas.getvalue()))), 413, "messages[0].content[1].image_url.url"),
        ("body over the cap", b'{"model": "' + b"x" * 500_000 + b'"}', None, 413, None),
    ]
    for name, raw, body, status, param in cases:
        r = served.post("/v1/chat/completions", body, raw=raw)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}, name
        assert err["param"] == param, (name, err)
        if param:
            assert param in err["message"], (name, err["message"])
        assert r.headers.get("x-request-id"), name
    # the openai client surfaces the same errors as its exceptions
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        served.client().chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "x"}], max_tokens=1000)
    assert "max_tokens" in str(info.value)


def test_api_key_is_required(served: Served) -> None:
    import openai

    for key in (None, "sk-wrong"):
        r = served.post("/v1/chat/completions", _chat(), key=key)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    r = requests.get(served.url + "/v1/models", timeout=30)
    assert r.status_code == 401
    r = requests.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x"},
                      headers={"Authorization": "Basic " + KEY}, timeout=30)
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        served.client("sk-wrong").chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "hi"}])


def test_urls_outside_the_allowlist_and_files_are_never_read(served: Served,
                                                             tmp_path: Path) -> None:
    on_disk = tmp_path / "local.png"
    on_disk.write_bytes(served.png)  # a valid image: had it been read, the request would pass
    other = f"http://127.0.0.1:{served.other.port}/img.png"
    allowed = f"http://127.0.0.1:{served.allowed.port}"
    refused = [
        (other, "image_host_not_allowed"),
        (f"http://127.0.0.1:{served.allowed.port}@127.0.0.1:{served.other.port}/img.png",
         "image_host_not_allowed"),
        (f"file://{on_disk}", "unsupported_image_url"),
        (f"file:{on_disk}", "unsupported_image_url"),
        (str(on_disk), "unsupported_image_url"),
        (f"{allowed}/redirect.png", "image_fetch_failed"),  # a redirect off the list: not followed
    ]
    for url, code in refused:
        r = served.post("/v1/chat/completions", _chat(messages=_image_msg(url)))
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["code"] == code, (url, r.text)
        assert r.json()["error"]["param"] == "messages[0].content[1].image_url.url"
    assert served.other.hits == []  # never contacted, not even through the redirect
    assert served.allowed.hits == ["/redirect.png"]
    # an allow-listed URL is fetched (once) and answered like the same image as a data: URI
    via_url = served.post("/v1/chat/completions", _chat(
        messages=_image_msg(f"{allowed}/img.png"), temperature=0, max_tokens=8))
    via_data = served.post("/v1/chat/completions", _chat(
        messages=_image_msg(data_uri(served.png)), temperature=0, max_tokens=8))
    assert via_url.status_code == 200, via_url.text
    assert via_url.json()["choices"] == via_data.json()["choices"]
    assert served.allowed.hits == ["/redirect.png", "/img.png"]


def test_a_model_error_is_a_500_with_request_id_and_others_are_answered(served: Served) -> None:
    bodies = [_chat(messages=[{"role": "user", "content": f"question {i}"}], max_tokens=6,
                    temperature=0) for i in range(6)]
    bodies[2] = _chat(messages=[{"role": "user", "content": f"{FAIL} now"}], max_tokens=6)
    with ThreadPoolExecutor(6) as pool:  # concurrent: they share batches with the bad one
        results = list(pool.map(lambda b: served.post("/v1/chat/completions", b), bodies))
    for i, r in enumerate(results):
        if i == 2:
            assert r.status_code == 500, r.text
            err = r.json()["error"]
            assert err["type"] == "server_error" and err["code"] == "model_error"
            assert r.headers["x-request-id"] in err["message"]
        else:
            assert r.status_code == 200, (i, r.text)
    after = served.post("/v1/chat/completions", _chat(max_tokens=4))
    assert after.status_code == 200


# --------------------------------------------------------------------------- load


def test_200_requests_at_concurrency_32(served: Served) -> None:
    client = served.client()
    question = [{"type": "text", "text": "Describe it."},
                {"type": "image_url", "image_url": {"url": data_uri(served.png)}}]

    def one(i: int) -> tuple[int, int]:
        if i % 4 == 0:  # a quarter stream, sharing batches with the rest
            chunks = list(client.chat.completions.create(
                model=MODEL, max_tokens=8, temperature=0, stream=True,
                messages=[{"role": "user", "content": question}]))
            return 1, sum(1 for c in chunks if c.choices and c.choices[0].finish_reason)
        out = client.chat.completions.create(
            model=MODEL, max_tokens=8, temperature=0.7, seed=i,
            messages=[{"role": "user", "content": question if i % 2 else f"Hello {i}"}])
        return 1, int(out.choices[0].finish_reason in ("stop", "length"))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(200)))
    took = time.perf_counter() - t0
    assert results == [(1, 1)] * 200
    print(f"200 requests at concurrency 32: {took:.1f} s ({200 / took:.1f} req/s)")


def test_chat_page_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    image = tmp_path / "upload.png"
    image.write_bytes(png_bytes((200, 40, 40)))
    with chromium(tmp_path / "profile") as browser:
        js = browser.js
        browser.open(served.url + "/")
        browser.type("#key", KEY)
        js("document.getElementById('temperature').value = '0';"
           "document.getElementById('max_tokens').value = '12';")
        browser.type("#text", "What is in this picture?")
        browser.type("#image", str(image))
        browser.click("#send")
        state = None
        for _ in range(600):
            state = js("const m = document.querySelector('.msg.assistant, .msg.error');"
                       "return m && m.dataset.done ? {cls: m.className, text: "
                       "m.querySelector('.content').textContent, img: "
                       "document.querySelectorAll('.msg.user img').length,"
                       "finish: m.dataset.finishReason || null} : null;")
            if state:
                break
            time.sleep(0.1)
        assert state is not None, "the page never finished its answer"
        assert state["cls"] == "msg assistant", state
        assert state["img"] == 1  # the uploaded image is shown in the conversation
        # the page's streamed answer equals the API's answer to the same message
        api_msg = _image_msg(data_uri(image.read_bytes()))
        api_msg[0]["content"][0]["text"] = "What is in this picture?"
        api = served.post("/v1/chat/completions", _chat(messages=api_msg, temperature=0,
                                                        max_tokens=12))
        assert api.status_code == 200
        assert state["text"] == api.json()["choices"][0]["message"]["content"]
        assert state["finish"] == api.json()["choices"][0]["finish_reason"]


def test_a_replica_killed_under_load_comes_back(served: Served) -> None:
    import ray
    import ray.util
    from ray import serve

    def replicas() -> list[str]:
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith(f"SERVE_REPLICA::{APP}#"))

    before = replicas()
    assert len(before) == 2
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        while not stop.is_set():
            try:
                codes.append(served.post("/v1/chat/completions", _chat(max_tokens=6),
                                         timeout=60).status_code)
            except requests.RequestException:
                codes.append(-1)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    victim = ray.get_actor(before[0], namespace="serve")
    ray.kill(victim, no_restart=True)
    deadline = time.time() + 180
    status = None
    while time.time() < deadline:
        status = serve.status().applications[APP].deployments["CleverFlamingo"]
        now = replicas()
        if before[0] not in now and len(now) == 2 and status.replica_states.get("RUNNING") == 2:
            break
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    assert before[0] not in replicas() and len(replicas()) == 2, status
    assert codes.count(200) > 0
    print(f"under load while a replica died: {codes.count(200)} ok, "
          f"{len(codes) - codes.count(200)} failed")
    after = [served.post("/v1/chat/completions", _chat(max_tokens=4)) for _ in range(10)]
    assert [r.status_code for r in after] == [200] * 10


def test_quickstart_smoke_hook(served: Served) -> None:
    """chat_once deploys its own app next to this one and answers through the openai client."""
    from ray import serve

    from pf_ray.serve.smoke import chat_once

    out = chat_once(str(served.export), served.png, "What is in the picture?", max_tokens=8)
    assert out["ok"], out
    assert isinstance(out["answer"], str) and out["total_s"] > 0
    assert out["first_token_s"] is None or 0 < out["first_token_s"] <= out["total_s"]
    assert out["completion_tokens"] >= 1
    assert "pf-ray-smoke" not in serve.status().applications  # it cleaned up
