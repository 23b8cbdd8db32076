"""Request validation of the serving API, without Ray: every refusal names its field."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from pf_ray.model.prompts import SYSTEM_MESSAGE, Turn, encode_chat, encode_rewrite, rewrite_text
from pf_ray.model.tokenizer import build_tiny_tokenizer
from pf_ray.serve.api import APIError, ChatRequest, CompletionRequest, param_path, parse
from pf_ray.serve.engine import TextStream, completion_tokens
from pf_ray.serve.images import ImageRef, classify, decode_data_uri, host_allowed, open_image
from pf_ray.serve.prepare import encode, load_job, plan_chat, plan_completion
from pf_ray.serve.spec import ServeSpec

SPEC = ServeSpec(kind="serve", model="/nowhere", limits={"max_tokens": 64, "default_max_tokens": 16, "max_messages": 6,
                                                         "max_images": 2, "max_image_bytes": 5000,
                                                         "max_image_pixels": 10_000})


def png(w: int = 8, h: int = 8, colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def chat(**kw) -> bytes:
    body = {"model": "clever-flamingo", "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return json.dumps(body).encode()


def refused(fn, *args) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args)
    return info.value


def plan(body: bytes):
    return plan_chat(parse(ChatRequest, body), SPEC)


# ------------------------------------------------------------------ malformed requests

@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (chat(max_tokens="5"), 400, "max_tokens"),
    (chat(max_tokens=0), 400, "max_tokens"),
    (chat(temperature="hot"), 400, "temperature"),
    (chat(temperature=3), 400, "temperature"),
    (chat(top_p=0), 400, "top_p"),
    (chat(stream="yes"), 400, "stream"),
    (chat(seed=1.5), 400, "seed"),
    (chat(stop=[1]), 400, "stop[0]"),
    (chat(messages="hi"), 400, "messages"),
    (chat(messages=[]), 400, "messages"),
    (chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].role"),
    (chat(messages=[{"content": "x"}]), 400, "messages[0].role"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
])
def test_malformed_bodies_name_the_field(body, status, param):
    err = refused(plan, body)
    assert (err.status, err.param) == (status, param), err.message
    assert err.body()["error"]["type"] == "invalid_request_error"
    if param:
        assert param in err.message


@pytest.mark.parametrize("messages, param, words", [
    ([{"role": "user", "content": 5}], "messages[0].content", "string or a list"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "messages[0].content[0].type", "audio"),
    ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "object"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "messages[0].content[0].text",
     "string"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
     "messages[0].content[0].image_url.url", "string"),
    ([{"role": "assistant", "content": "hello"}], "messages[0].role", "follow a user"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "messages[1].role",
     "first"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages",
     "last message"),
    ([{"role": "user", "content": "look <image> here"}], "messages[0].content", "reserved"),
    ([{"role": "user", "content": "a"},
      {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
      {"role": "user", "content": "b"}], "messages[1].content[0]", "user messages only"),
    ([{"role": "user", "content": "x"}] * 7, "messages", "at most 6"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}] * 3}],
     "messages", "at most 2 (limits.max_images)"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}] * 2},
      {"role": "assistant", "content": "two"},
      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
     "messages", "3 images"),  # the limit counts the images of every turn
])
def test_message_contents_are_checked_part_by_part(messages, param, words):
    err = refused(plan, chat(messages=messages))
    assert (err.status, err.param) == (400, param), err.message
    assert words in err.message


@pytest.mark.parametrize("kw, status, param", [
    ({"n": 2}, 400, "n"),
    ({"max_tokens": 65}, 400, "max_tokens"),
    ({"max_completion_tokens": 100}, 400, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"stop": [""]}, 400, "stop"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "gpt-4"}, 404, "model"),
])
def test_unsupported_options_are_refused(kw, status, param):
    err = refused(plan, chat(**kw))
    assert (err.status, err.param) == (status, param), err.message


def test_param_path_drops_union_tags():
    assert param_path(("messages", 0, "role")) == "messages[0].role"
    assert param_path(("stop", "list[str]", 2)) == "stop[2]"


# ------------------------------------------------------------------ images

def test_url_schemes_and_hosts():
    allowed = ["images.example.com", "127.0.0.1:9000"]
    assert classify(ImageRef(data_uri(png()), "p"), []) == "data"
    assert classify(ImageRef("https://images.example.com/a.png", "p"), allowed) == "http"
    assert classify(ImageRef("http://127.0.0.1:9000/a.png", "p"), allowed) == "http"
    for url in ("http://127.0.0.1:9001/a.png", "http://evil.com/a.png",
                "http://images.example.com.evil.com/a.png",
                "http://images.example.com@evil.com/a.png", "https://images.example.com/a.png"):
        ok = host_allowed(url, allowed)
        assert ok == (url == "https://images.example.com/a.png"), url
    err = refused(classify, ImageRef("http://evil.com/a.png", "messages[0].content[1].image_url"
                                                              ".url"), allowed)
    assert (err.status, err.code) == (400, "image_host_not_allowed")
    assert err.param == "messages[0].content[1].image_url.url"
    for url in ("file:///etc/passwd", "FILE:///etc/passwd", "/etc/passwd", "ftp://x/a.png",
                "s3://bucket/a.png", "gopher://x"):
        err = refused(classify, ImageRef(url, "images[0]"), ["x", "bucket"])
        assert (err.status, err.code, err.param) == (400, "unsupported_image_url", "images[0]")


def test_data_uris_and_decoding_limits():
    ref = ImageRef(data_uri(png()), "images[0]")
    assert open_image(decode_data_uri(ref, 5000), "images[0]", 10_000).size == (8, 8)
    err = refused(decode_data_uri, ImageRef(data_uri(b"x" * 6000), "images[0]"), 5000)
    assert (err.status, err.code) == (413, "image_too_large")
    err = refused(decode_data_uri, ImageRef("data:image/png;base64,@@@@", "images[0]"), 5000)
    assert (err.status, err.param) == (400, "images[0]")
    err = refused(decode_data_uri, ImageRef("data:text/plain;base64,aGk=", "images[0]"), 5000)
    assert "not an image" in err.message
    err = refused(decode_data_uri, ImageRef("data:image/png,rawbytes", "images[0]"), 5000)
    assert "base64" in err.message
    big = png(200, 200)  # 40k pixels > 10k, yet a small file
    assert len(big) < 5000
    err = refused(open_image, big, "images[0]", 10_000)
    assert (err.status, err.code) == (413, "image_too_large") and "200x200" in err.message
    err = refused(open_image, b"GIF89a-not-really", "images[0]", 10_000)
    assert (err.status, err.code) == (400, "invalid_image")


# ------------------------------------------------------------------ the chat format

def test_chat_maps_onto_the_clever_flamingo_format(tok):
    img = {"type": "image_url", "image_url": {"url": data_uri(png())}}
    p = plan(chat(messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, img]},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "And its colour?"},
        {"role": "user", "content": [img]},
    ], max_tokens=5, temperature=0, stop="END"))
    assert p.turns == [Turn("What is this?", "A red square.", images=1),
                       Turn("And its colour?\n", None, images=1)]
    assert p.system == SYSTEM_MESSAGE and len(p.image_refs) == 2
    assert [r.param for r in p.image_refs] == ["messages[0].content[1].image_url.url",
                                               "messages[3].content[0].image_url.url"]
    cfg = p.config
    assert (cfg.max_new_tokens, cfg.do_sample, cfg.stop_strings[0]) == (5, False, "END")
    assert "\n### Human:" in cfg.stop_strings  # the model may not start the next turn
    ids = encode(p, tok, "next_image", 1024)
    assert ids == encode_chat(tok, p.turns, "next_image").input_ids
    text = tok.decode(ids)
    assert "What is this?<image><|endofchunk|>\n### Assistant: A red square.</s>" in text
    assert text.endswith("\n### Assistant: ")
    sys_plan = plan(chat(messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "hi"}], temperature=0.5))
    assert sys_plan.system == "Be brief." and sys_plan.config.do_sample
    err = refused(encode, plan(chat(max_tokens=60)), tok, "next_image", 80)
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "messages")


def test_two_images_in_one_message_reach_the_model_in_order(tok):
    """A before and an after image in one user message: one human turn with two markers,
    and the job the generator gets holds the two decoded images in the parts' order."""
    red, blue = png(colour=(220, 20, 20)), png(colour=(20, 20, 220))
    p = plan(chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(red)}},
        {"type": "text", "text": "What changed?"},
        {"type": "image_url", "image_url": {"url": data_uri(blue)}}]}], temperature=0))
    assert p.turns == [Turn("What changed?", None, images=2)]
    assert [r.param for r in p.image_refs] == ["messages[0].content[0].image_url.url",
                                               "messages[0].content[2].image_url.url"]
    job = asyncio.run(load_job(p, "rid", SPEC, tok, "next_image", 1024))
    assert [img.getpixel((0, 0)) for img in job.images] == [(220, 20, 20), (20, 20, 220)]
    assert job.prompt_ids == encode_chat(tok, p.turns, "next_image").input_ids
    media = tok.convert_tokens_to_ids("<image>")
    assert job.prompt_ids.count(media) == 2
    text = tok.decode(job.prompt_ids)
    assert text.endswith("### Human: What changed?\nImage 1: <image><|endofchunk|>, "
                         "Image 2: <image><|endofchunk|>\n### Assistant: ")
    # previous_image models: the two markers open the turn instead
    ids = asyncio.run(load_job(p, "rid", SPEC, tok, "previous_image", 1024)).prompt_ids
    assert tok.decode(ids).endswith(
        "### Human: Image 1: <image>, Image 2: <image>\nWhat changed?\n### Assistant: ")
    # an image that fails names its own part
    bad = plan(chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(red)}},
        {"type": "image_url", "image_url": {"url": data_uri(b"not a png")}}]}]))
    err = refused(lambda: asyncio.run(load_job(bad, "rid", SPEC, tok, "next_image", 1024)))
    assert (err.status, err.param) == (400, "messages[0].content[1].image_url.url")


def test_completions_tokenise_as_the_rewriter_was_trained(tok):
    prompt = rewrite_text("Describe the image.", "a red square", images=1)
    body = json.dumps({"model": "clever-flamingo", "prompt": prompt, "max_tokens": 8,
                       "images": [data_uri(png())], "stop": ["\n###"]}).encode()
    p = plan_completion(parse(CompletionRequest, body), SPEC)
    assert p.config.stop_strings == ("\n###",) and p.image_refs[0].param == "images[0]"
    assert encode(p, tok, "next_image", 1024) == encode_rewrite(
        tok, "Describe the image.", "a red square", images=1).input_ids
    for extra, param in [({"images": []}, "images"), ({"stream": True}, "stream"),
                         ({"echo": True}, "echo"), ({"prompt": ["a", "b"]}, "prompt"),
                         ({"images": "x"}, "images")]:
        bad = json.dumps({**json.loads(body), **extra}).encode()
        err = refused(lambda b: plan_completion(parse(CompletionRequest, b), SPEC), bad)
        assert (err.status, err.param) == (400, param), err.message


# ------------------------------------------------------------------ streaming text

def test_text_stream_deltas_add_up_to_the_final_text(tok):
    ids = tok("Hello there, friend.\n### Human: more", add_special_tokens=False).input_ids
    stops = ["\n### Human:", "\n### Assistant:"]
    stream = TextStream(tok, stops)
    deltas = []
    for k, t in enumerate(ids):  # as the generator: the row ends when a stop string appears
        ended = any(s in tok.decode(ids[:k + 1]) for s in stops)
        deltas.append(stream.feed(t, last=ended))
        if ended:
            break
    assert "".join(deltas) == "Hello there, friend."
    assert not any("\n" in d for d in deltas)  # the stop's start was held back, never sent
    assert sum(1 for d in deltas if d) > 3  # and the rest streamed token by token
    plain = TextStream(tok, [])
    assert "".join([plain.feed(t) for t in ids] + [plain.feed(None, last=True)]) == tok.decode(
        ids, skip_special_tokens=True)
    assert completion_tokens(4, "eos") == 5 and completion_tokens(4, "length") == 4
