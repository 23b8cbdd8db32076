"""The rewrite stage's ``vllm`` engine without vLLM: the spec block, the plan's wiring, the
model and adapter found, the engine arguments, each row's request (the prompt string
pf-ray's generator renders, the loader's pixels), decoding and the fault taxonomy. The
engine itself runs in tests/vllm (``.venv-vllm``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.images import ImageLoader
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, UNIT
from pf_ray.engines import registry
from pf_ray.engines.vllm import LLMTask, _Post, _Pre, mark_engine_errors
from pf_ray.engines.vllm_vlm import (
    STOP_IDS,
    VLLMVLMEngineConfig,
    VLMRequest,
    VLMTarget,
    decode_result,
    engine_arguments,
    gen_params,
    resolve_vlm,
    row_reason,
)
from pf_ray.faults import ModelUnavailable, UnitFailed
from pf_ray.rewrite.vllm import ENGINE_IMAGES, read_images, rewrite_output


def fake_model(folder: Path, *, rank: int | None = None,
               config: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "idefics3"}))
    if rank is not None:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return folder


def vllm_block(model: str, **extra: Any) -> VLLMVLMEngineConfig:
    return VLLMVLMEngineConfig(kind="vllm", model=model, **extra)


def rewrite_spec(inputs: str, out: str, engine: dict[str, Any], **extra: Any) -> Any:
    return parse_spec({"kind": "rewrite", "inputs": [inputs], "output": {"path": out},
                       "engine": engine, **extra})


# ------------------------------------------------------------------ spec and plan


def test_engine_block_is_registered_as_a_dataset_stage(tmp_path: Path) -> None:
    assert registry.get("vllm").dataset_stage and not registry.get("hf_vlm").dataset_stage
    spec = rewrite_spec("in", "out", {"kind": "vllm", "model": str(tmp_path), "num_gpus": 0})
    assert spec.engine.kind == "vllm" and spec.engine.adapter == "auto"
    with pytest.raises(SpecError, match="num_beams"):
        rewrite_spec("in", "out", {"kind": "vllm", "model": "m"},
                     decoding={"num_beams": 3})
    with pytest.raises(SpecError, match="separate_cpu_stages"):
        rewrite_spec("in", "out", {"kind": "vllm", "model": "m", "separate_cpu_stages": False})
    with pytest.raises(ValueError, match="Ray Data stage"):
        registry.build(spec.engine, spec.decoding, spec.storage)


def test_plan_reads_images_in_tasks_and_ends_in_the_ray_data_stage(tmp_path: Path) -> None:
    from sample_inputs import write_inputs

    from pf_ray.rewrite.plan import plan_rewrite
    from pf_ray.rewrite.vllm import RewriteOnVLLM

    write_inputs(tmp_path / "in", shards=1, rows=9)
    model = fake_model(tmp_path / "m", rank=16)
    engine = {"kind": "vllm", "model": str(model), "num_gpus": 0}
    plan = plan_rewrite(rewrite_spec(str(tmp_path / "in"), str(tmp_path / "o"), engine))
    assert [s.name for s in plan.steps] == ["prepare_rows", "rewrite"]
    assert not plan.steps[1].uses_actors  # image reading: CPU tasks, no model
    assert isinstance(plan.ray_stage, RewriteOnVLLM)
    assert plan.ray_stage.target == VLMTarget(str(model), lora=str(model / "adapter"),
                                              lora_rank=16)
    # where the engines run is not part of the shard names (a resume on more GPUs)
    bigger = plan_rewrite(rewrite_spec(str(tmp_path / "in"), str(tmp_path / "o"), {
        **engine, "num_gpus": 1, "max_actors": 8, "batch_size": 64, "num_cpus": 4,
        "accelerator_type": "L4"}))
    assert bigger.spec_hash == plan.spec_hash
    other = plan_rewrite(rewrite_spec(str(tmp_path / "in"), str(tmp_path / "o"),
                                      {**engine, "adapter": "none"}))
    assert other.spec_hash != plan.spec_hash  # another model: another output
    # a missing model fails when the plan is built, before any unit runs
    with pytest.raises(ModelUnavailable, match="no hf_vlm model folder"):
        plan_rewrite(rewrite_spec(str(tmp_path / "in"), str(tmp_path / "o"),
                                  {**engine, "model": str(tmp_path / "nowhere")}))


# ------------------------------------------------------------------ model, adapter, kwargs


def test_resolve_model_and_adapter(tmp_path: Path) -> None:
    base = fake_model(tmp_path / "base")
    assert resolve_vlm(vllm_block(str(base))) == VLMTarget(str(base))
    lora = fake_model(tmp_path / "lora", rank=4)
    assert resolve_vlm(vllm_block(str(lora))) == VLMTarget(
        str(lora), lora=str(lora / "adapter"), lora_rank=4)
    assert resolve_vlm(vllm_block(str(lora), adapter="none")) == VLMTarget(str(lora))
    flamingo = fake_model(tmp_path / "fl", config={"vision": {}, "lm": {}, "tokens": {}})
    with pytest.raises(ModelUnavailable, match="flamingo model folder"):
        resolve_vlm(vllm_block(str(flamingo)))
    with pytest.raises(ModelUnavailable, match="no hf_vlm model folder"):
        resolve_vlm(vllm_block(str(tmp_path / "missing")))


def test_resolve_uri_model_serves_its_adapter_by_name(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An object-store model: ray.data.llm copies ``<dynamic_lora_loading_path>/<name>``,
    the model's folder and ``adapter/`` (the name also keys its cache on the node)."""
    import pyarrow.fs as pafs

    from pf_ray import storage

    fake_model(tmp_path / "bucket" / "models" / "rw", rank=64)
    monkeypatch.setattr(storage, "resolve", lambda uri, cfg=None: (
        pafs.LocalFileSystem(), str(tmp_path / "bucket" / uri.removeprefix("s3://b/"))))
    uri = "s3://b/models/rw"
    assert resolve_vlm(vllm_block(uri)) == VLMTarget(uri, lora="rw/adapter",
                                                     lora_root="s3://b/models", lora_rank=64)


def test_engine_arguments() -> None:
    cfg = vllm_block("m", engine_kwargs={"max_model_len": 4096}, max_images=3)
    assert engine_arguments(cfg, VLMTarget("m")) == {"max_model_len": 4096,
                                                     "limit_mm_per_prompt": {"image": 3}}
    got = engine_arguments(cfg, VLMTarget("m", lora="m/adapter", lora_rank=4))
    assert (got["enable_lora"], got["max_loras"], got["max_lora_rank"]) == (True, 1, 8)
    assert engine_arguments(cfg, VLMTarget("m", lora="a", lora_rank=100))["max_lora_rank"] == 128
    own = vllm_block("m", engine_kwargs={"limit_mm_per_prompt": {"image": 1},
                                         "max_lora_rank": 256})
    got = engine_arguments(own, VLMTarget("m", lora="a", lora_rank=64))
    assert got["limit_mm_per_prompt"] == {"image": 1} and got["max_lora_rank"] == 256


def test_gen_params_greedy_unless_sampling() -> None:
    from pf_ray.engines.config import DecodingConfig

    greedy = gen_params(DecodingConfig(max_new_tokens=64), ("\n### Human:",))
    assert (greedy.temperature, greedy.max_new_tokens, greedy.stop) == (
        0.0, 64, ("\n### Human:",))
    sampled = gen_params(DecodingConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.9,
                                        seed=3), ())
    assert sampled.sampling_fields() == {"max_tokens": 128, "temperature": 0.7, "top_p": 0.9,
                                         "stop": [], "seed": 3, "top_k": 20}


# ------------------------------------------------------------------ rows


def test_read_images_gives_the_loaders_pixels_and_rejects_broken_rows() -> None:
    from PIL import Image

    from pf_ray.data.synthetic import image_png

    first, second = image_png(0, 0, 64), image_png(1, 0, 64)
    batch = {"id": ["a", "b", "c", "d"], "image": [None, None, None, None],
             "image_bytes": [first, first, b"no image", None],
             "extra_images": [None, [{"image": None, "image_bytes": second}], None, None]}
    out = read_images(batch, loader=ImageLoader(), fetch_threads=2)
    assert [len(x) if x is not None else None for x in out[ENGINE_IMAGES]] == [1, 2, None, 0]
    assert out[REJECT_REASON] == [None, None, "image_not_image", None]
    loader = ImageLoader()
    for png, stored in zip(out[ENGINE_IMAGES][1], (first, second), strict=True):
        got = np.asarray(Image.open(__import__("io").BytesIO(png)))
        assert np.array_equal(got, np.asarray(loader.load(None, stored)))  # lossless
    assert out["output"] == [None] * 4 and out["finish_reason"] == [None] * 4


@pytest.fixture(scope="module")
def tiny_processor() -> tuple[str, Any]:
    from pf_ray.engines.vllm_vlm import load_processor
    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder

    folder = str(hf_vlm_preset_folder("tiny-idefics3"))
    return folder, load_processor(folder)


def test_request_is_the_prompt_pf_rays_generator_renders(tiny_processor: tuple[str, Any]
                                                         ) -> None:
    from pf_ray.data.images import encode_png
    from pf_ray.data.synthetic import image_png
    from pf_ray.engines.base import Prompt
    from pf_ray.engines.hf_vlm import HFVLMGenerator
    from pf_ray.model.hf_vlm.prompts import rewrite_messages, stop_token_ids
    from pf_ray.rewrite.vllm import rewrite_row_messages

    folder, processor = tiny_processor
    images = [ImageLoader().load(None, image_png(0, k, 64)) for k in range(2)]
    row = {"instruction": "What changed?", "original": "a square", ENGINE_IMAGES:
           [encode_png(img, compress_level=1) for img in images]}
    request = VLMRequest(VLMTarget(folder, lora="/m/adapter"), rewrite_row_messages,
                         ENGINE_IMAGES)(row)
    generator = HFVLMGenerator(model=object(), processor=processor)
    (expected,) = generator.prompt_texts([Prompt(
        user="", messages=lambda: rewrite_messages("What changed?", "a square", 2))])
    assert request["prompt"] == expected and request["prompt"].count("<image>") == 2
    assert request["prompt"].endswith("(Revised Response) ")
    assert [np.asarray(i).tolist() for i in request["multimodal_data"]["image"]] == [
        np.asarray(i).tolist() for i in images]
    assert request["model"] == "/m/adapter"
    stops = stop_token_ids(processor)
    assert request["sampling"] == {"stop_token_ids": stops} and request[STOP_IDS] == stops
    text_only = VLMRequest(VLMTarget(folder), rewrite_row_messages, ENGINE_IMAGES)(
        {**row, ENGINE_IMAGES: []})
    assert "multimodal_data" not in text_only and "model" not in text_only


def test_decode_result_as_pf_rays_generator_decodes(tiny_processor: tuple[str, Any]) -> None:
    _, processor = tiny_processor
    tok = processor.tokenizer
    ids = tok("a red circle", add_special_tokens=False).input_ids
    end = tok.convert_tokens_to_ids("<end_of_utterance>")
    row = {STOP_IDS: [end, tok.eos_token_id]}
    stops = ("\n### Human:",)
    assert decode_result({**row, "generated_tokens": [*ids, end]}, stops, processor) == (
        "a red circle", "eos")
    assert decode_result({**row, "generated_tokens": ids}, stops, processor) == (
        "a red circle", "length")
    human = tok("\n### Human: hi", add_special_tokens=False).input_ids
    assert decode_result({**row, "generated_tokens": [*ids, *human]}, stops, processor) == (
        "a red circle", "stop")


class FakeVLM:
    def __init__(self, text: str, reason: str):
        self.value = (text, reason)

    def result(self, row: dict[str, Any], stops: Any) -> tuple[str, str]:
        return self.value


def test_output_checks_keep_the_output_in_the_reject() -> None:
    from pf_ray.rewrite.spec import ChecksConfig

    ok, reason = rewrite_output({}, "", vlm=FakeVLM("A red circle.", "eos"), stops=(),
                                checks=ChecksConfig())
    assert ok == {"output": "A red circle.", "finish_reason": "eos"} and reason is None
    cut, reason = rewrite_output({}, "", vlm=FakeVLM("A red", "length"), stops=(),
                                 checks=ChecksConfig())
    assert cut["finish_reason"] == "length" and reason is not None
    assert reason[0] == "missing_eos" and "A red" in reason[1]
    # through the postprocess: a check's reject keeps output and finish_reason
    task = LLMTask(stage="rewrite", carried=("id", "output", "finish_reason"),
                   select=lambda r: True, messages=lambda r: [],
                   on_output=lambda r, t: rewrite_output(
                       r, t, vlm=FakeVLM("A red", "length"), stops=(),
                       checks=ChecksConfig()))
    out = _Post(task, ())({"id": "x", "generated_text": "A red"})
    assert (out["output"], out["finish_reason"], out[REJECT_REASON], out[REJECT_STAGE]) == (
        "A red", "length", "missing_eos", "rewrite")


def test_preprocess_takes_the_stages_request() -> None:
    from pf_ray.engines.base import GenParams

    task = LLMTask(stage="rewrite", carried=("id",), select=lambda r: True,
                   messages=lambda r: [],
                   on_output=lambda r, t: ({}, None),
                   request=lambda r: {"prompt": "P", "sampling": {"stop_token_ids": [7]},
                                      "model": "/a"})
    out = _Pre(task, vllm_block("m"), GenParams(max_new_tokens=5, stop=("x",)))({"id": "1"})
    assert out["prompt"] == "P" and out["model"] == "/a" and "messages" not in out
    assert out["sampling_params"] == {"max_tokens": 5, "temperature": 0.0, "top_p": 1.0,
                                      "stop": ["x"], "seed": 0, "stop_token_ids": [7]}


# ------------------------------------------------------------------ faults


def llm_task() -> LLMTask:
    return LLMTask(stage="rewrite", carried=("id", "output", "finish_reason"),
                   select=lambda r: True, messages=lambda r: [],
                   on_output=lambda r, t: ({}, None), row_reason=row_reason)


def error_batch(*errors: str) -> dict[str, list[Any]]:
    n = len(errors)
    return {"id": [str(i) for i in range(n)], UNIT: ["u1"] * n, "output": [None] * n,
            "finish_reason": [None] * n, REJECT_STAGE: [None] * n,
            REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n,
            "__inference_error__": list(errors)}


def test_row_errors_are_rejects_engine_faults_fail_the_unit() -> None:
    out = mark_engine_errors(error_batch(
        "", "VLLMValidationError: The decoder prompt (length 900) is longer than the maximum "
        "model length of 512. Make sure that `max_model_len` is no smaller than ...",
        "ValueError: At most 2 image(s) may be provided in one prompt."), task=llm_task())
    assert out[REJECT_REASON] == [None, "prompt_too_long", "llm_error"]
    assert out[REJECT_STAGE] == [None, "rewrite", "rewrite"]
    for fault in ("EngineDeadError: EngineCore encountered an issue.",
                  "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
                  "OutOfMemoryError: DefaultCPUAllocator: not enough memory"):
        with pytest.raises(UnitFailed, match="u1"):
            mark_engine_errors(error_batch("", fault), task=llm_task())
