"""Tiny ``hf_vlm`` models for the vLLM tests and bench: the tiny Idefics3 folder, a copy of it
with a random LoRA adapter (input datasets: ``tests/sample_inputs.py``)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_model(folder: Path, *, lm: str = "tiny") -> Path:
    """The tiny Idefics3 model (``build_tiny_idefics3``) in ``folder``, built once."""
    from pf_ray.model.hf_vlm.tiny import build_tiny_idefics3

    if (folder / "config.json").is_file():
        return folder
    return build_tiny_idefics3(folder, lm=lm)  # type: ignore[arg-type]


def add_adapter(base: Path, folder: Path, *, r: int = 8, alpha: int = 16, seed: int = 1,
                std: float = 0.05) -> Path:
    """A copy of ``base`` with ``adapter/``: a peft LoRA over the language model only
    (:func:`pf_ray.model.hf_vlm.parts.add_lm_lora`), its B matrices random and non-zero so
    that it changes the outputs (a fresh LoRA's B = 0 would not)."""
    import peft
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText

    from pf_ray.model.config import LoraSettings
    from pf_ray.model.hf_vlm.parts import add_lm_lora, lm_lora_pattern
    from pf_ray.model.lora import adapter_state_dict

    if (folder / "adapter" / "adapter_config.json").is_file():
        return folder
    shutil.copytree(base, folder, dirs_exist_ok=True)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    settings = LoraSettings(r=r, alpha=alpha, dropout=0.0, target_modules=LORA_TARGETS)
    adapted = add_lm_lora(model, settings)
    assert all(".text_model." in name for name in adapted), adapted
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    adapter = folder / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                    target_modules=lm_lora_pattern(LORA_TARGETS)).save_pretrained(str(adapter))
    state = adapter_state_dict(model)
    assert state and all(".text_model." in k for k in state)
    save_file(state, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder


def synthetic_image(seed: int, index: int) -> Any:
    from PIL import Image

    from pf_ray.data.synthetic import image_png

    return Image.open(io.BytesIO(image_png(seed, index, 64))).convert("RGB")
