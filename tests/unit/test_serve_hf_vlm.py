"""``kind: serve`` for hf_vlm models, without Ray or a model: the spec's engine / family
checks, what the front sends on to vLLM, Serve LLM's config and the deployment options."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from pf_ray.config import SpecError, parse_spec
from pf_ray.model.prompts import STOP_STRINGS, SYSTEM_MESSAGE
from pf_ray.serve.api import APIError, ChatRequest
from pf_ray.serve.prepare import (
    load_images,
    openai_messages,
    plan_chat,
    served_models,
    vllm_request,
)
from pf_ray.serve.spec import ServeSpec

HF = {"family": "hf_vlm", "path": "/models/smolvlm"}


def spec(**fields: object) -> ServeSpec:
    return ServeSpec.model_validate({"kind": "serve", "model": HF, "engine": "vllm", **fields})


def errors_of(fields: dict[str, object]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "serve", **fields})
    return str(info.value)


def png(colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "PNG")
    return buf.getvalue()


def test_family_and_engine_fields() -> None:
    plain = ServeSpec(kind="serve", model="/exports/clever")
    assert (plain.model, plain.model_family, plain.engine) == ("/exports/clever", "flamingo",
                                                               "flamingo")
    s = spec()
    assert (s.model, s.model_family, s.engine) == ("/models/smolvlm", "hf_vlm", "vllm")
    assert ServeSpec.model_validate({"kind": "serve", "model": HF, "engine": "hf_vlm"}).engine \
        == "hf_vlm"
    preset = ServeSpec.model_validate({"kind": "serve", "model": "tiny-idefics3",
                                       "engine": "vllm"})
    assert preset.model_family == "hf_vlm"  # an hf_vlm preset name is its family


@pytest.mark.parametrize(("fields", "needles"), [
    ({"model": HF}, ["engine", "'flamingo'", "family 'hf_vlm'", "allowed: hf_vlm, vllm"]),
    ({"model": "/exports/clever", "engine": "vllm"},
     ["engine", "'vllm'", "family 'flamingo'", "allowed: flamingo", "{family: hf_vlm"]),
    ({"model": HF, "engine": "tgi"}, ["engine", "'flamingo', 'hf_vlm' or 'vllm'", "tgi"]),
    ({"model": {"family": "qwen", "path": "/m"}, "engine": "vllm"},
     ["model.family", "'qwen'", "flamingo, hf_vlm"]),
    ({"model": {"path": "/m", "revision": "x"}, "engine": "vllm"},
     ["model", "revision", "path and family"]),
    ({"model": HF, "engine": "vllm", "model_name": "smol:v2"},
     ["model_name", "'smol:v2'", "without ':'"]),
    ({"model": HF, "engine": "vllm", "fail_marker": "x"},
     ["fail_marker", "engine 'vllm'", "flamingo and hf_vlm"]),
    ({"model": HF, "engine": "vllm", "deployment": {"accelerator_type": "L4"}},
     ["deployment.accelerator_type", "'L4'", "gpus_per_replica 0"]),
    ({"model": HF, "engine": "vllm", "adapter_name": "a b"}, ["adapter_name", "a b"]),
    ({"model": HF, "engine": "vllm", "vllm": {"engine_kwarg": {}}}, ["vllm.engine_kwarg"]),
])
def test_spec_errors_name_field_received_and_allowed(fields: dict[str, object],
                                                     needles: list[str]) -> None:
    text = errors_of(fields)
    for needle in needles:
        assert needle in text, (needle, text)


def test_served_names_and_model_check() -> None:
    s = spec(model_name="smol")
    assert served_models(s) == ("smol",)
    assert served_models(s, adapter=True) == ("smol:adapter", "smol")
    req = ChatRequest.model_validate({"model": "smol:adapter", "messages": [
        {"role": "user", "content": "hi"}]})
    assert plan_chat(req, s, served_models(s, True)).model == "smol:adapter"
    with pytest.raises(APIError) as info:
        plan_chat(req, s)  # no adapter in this folder
    assert info.value.status == 404 and info.value.param == "model"
    assert "'smol:adapter' is not served here; available: 'smol'" in info.value.message


def test_what_vllm_is_sent() -> None:
    """The checked turns rebuilt as OpenAI messages: the default system message, images as
    data: URIs of the checked bytes (first in their turn, in order), sampling resolved."""
    s = spec(model_name="smol", limits={"default_max_tokens": 7})
    red, blue = png((200, 0, 0)), png((0, 0, 200))
    req = ChatRequest.model_validate({"model": "smol", "stream": True, "seed": 3,
                                      "stream_options": {"include_usage": True},
                                      "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                + base64.b64encode(red).decode()}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                + base64.b64encode(blue).decode()}}]},
        {"role": "assistant", "content": "they differ"},
        {"role": "user", "content": "how?"}]})
    plan = plan_chat(req, s)
    images = asyncio.run(load_images(plan, s))
    assert [i.format for i in images] == ["PNG", "PNG"] and images[0].data == red
    body = vllm_request(plan, images)
    assert body["model"] == "smol" and body["max_tokens"] == 7 and body["stream"] is True
    assert body["temperature"] == 1.0 and body["seed"] == 3 and "stop" not in body
    assert body["stream_options"] == {"include_usage": True}
    msgs = body["messages"]
    assert msgs[0] == {"role": "system", "content": SYSTEM_MESSAGE}
    first = msgs[1]["content"]
    assert [p["type"] for p in first] == ["image_url", "image_url", "text"]
    assert first[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(
        red).decode()
    assert first[2] == {"type": "text", "text": "compare"}
    assert msgs[2] == {"role": "assistant", "content": "they differ"}
    assert msgs[3]["content"] == [{"type": "text", "text": "how?"}]
    json.dumps(body)  # plain JSON all through
    greedy = vllm_request(plan_chat(ChatRequest.model_validate(
        {"model": "smol", "temperature": 0, "stop": "END",
         "messages": [{"role": "user", "content": "hi"}]}), s), [])
    assert greedy["temperature"] == 0.0 and greedy["stop"] == ["END"]
    assert "stream_options" not in greedy
    with pytest.raises(ValueError, match="more images"):
        openai_messages(plan, [*images, images[0]])


def test_flamingo_chats_keep_their_turn_stops() -> None:
    req = ChatRequest.model_validate({"model": "clever-flamingo",
                                      "messages": [{"role": "user", "content": "hi"}]})
    flamingo = plan_chat(req, ServeSpec(kind="serve", model="/m"))
    assert flamingo.config.stop_strings == STOP_STRINGS
    vlm = plan_chat(req, spec())
    assert vlm.config.stop_strings == ()


def test_serve_llm_config_and_placement(tmp_path: Path) -> None:
    from pf_ray.serve.llm import adapter_rank, front_options, llm_config, server_options

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {}}))
    assert adapter_rank(adapter) == 16  # vLLM takes 1, 8, 16, 32, ...
    cpu = spec(model_name="smol", deployment={"cpus_per_replica": 2},
               limits={"max_images": 3}, vllm={"engine_kwargs": {"max_model_len": 512}})
    cfg = llm_config(cpu, "/local/smol", adapter)
    assert cfg["model_loading_config"] == {"model_id": "smol", "model_source": "/local/smol"}
    assert cfg["placement_group_config"] == {"bundle_per_worker": {"CPU": 2.0}}
    assert cfg["engine_kwargs"] == {"max_model_len": 512, "limit_mm_per_prompt": {"image": 3},
                                    "enforce_eager": True, "dtype": "float32",
                                    "enable_lora": True, "max_loras": 1, "max_lora_rank": 16}
    assert cfg["lora_config"] == {"max_num_adapters_per_replica": 1}
    opts = server_options(cpu)
    assert opts["placement_group_bundles"] == [{"CPU": 2.0}]
    assert opts["ray_actor_options"]["num_cpus"] == 0
    assert "VLLM_CPU_KVCACHE_SPACE" in opts["ray_actor_options"]["runtime_env"]["env_vars"]
    assert opts["num_replicas"] == 1 and opts["name"] == "LLMServer:smol"

    gpu = spec(model_name="smol", python="/venvs/vllm/bin/python",
               deployment={"gpus_per_replica": 1, "cpus_per_replica": 4,
                           "accelerator_type": "L4",
                           "autoscaling": {"min_replicas": 0, "max_replicas": 3}},
               vllm={"engine_kwargs": {"tensor_parallel_size": 2, "dtype": "bfloat16"}})
    cfg = llm_config(gpu, "/local/smol", None)
    assert cfg["accelerator_type"] == "L4" and "lora_config" not in cfg
    assert cfg["engine_kwargs"] == {"tensor_parallel_size": 2, "dtype": "bfloat16",
                                    "limit_mm_per_prompt": {"image": 8}}
    opts = server_options(gpu)
    assert opts["placement_group_bundles"] == [
        {"CPU": 4.0, "GPU": 1.0, "accelerator_type:L4": 0.001}] * 2  # one per TP rank
    assert opts["ray_actor_options"]["runtime_env"] == {"py_executable": "/venvs/vllm/bin/python"}
    assert opts["autoscaling_config"]["min_replicas"] == 0 and "num_replicas" not in opts
    assert front_options(gpu)["ray_actor_options"] == {"num_cpus": 0.25}


def test_a_vllm_spec_round_trips_through_its_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    from pf_ray.apps import spec_from_args
    from pf_ray.serve.app import app_for
    from pf_ray.serve.launch import serve_config

    s = spec(model_name="smol", vllm={"engine_kwargs": {"max_model_len": 512}})
    config = serve_config(s)
    ServeDeploySchema.model_validate(config)
    args = config["applications"][0]["args"]
    assert args["model_family"] == "hf_vlm" and args["engine"] == "vllm"
    assert spec_from_args(args).model_dump(exclude={"wait", "name"}) == s.model_dump(
        exclude={"wait", "name"})
    assert app_for(s) is not None  # binds without vLLM or a cluster
