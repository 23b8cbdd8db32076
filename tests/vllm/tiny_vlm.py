"""Tiny ``hf_vlm`` models for the vLLM tests and bench: the tiny Idefics3 folder, a copy of it
with a random LoRA adapter, and pf-ray sample datasets with one- and two-image rows."""

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


BROKEN = b"these bytes are no image"


def write_inputs(root: Path, *, shards: int, rows: int, seed: int = 0, two_every: int = 3,
                 broken: tuple[int, ...] = ()) -> list[str]:
    """A pf-ray sample dataset of ``shards`` committed shards of ``rows`` synthetic rows
    each (:func:`pf_ray.data.synthetic.generate`): every ``two_every``-th image row gets a
    second image (``extra_images``, as a change caption has), the rows at the indices
    ``broken`` get image bytes that are no image. Returns every id, in order."""
    import pyarrow as pa

    from pf_ray.data.io import Dataset
    from pf_ray.data.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, to_table
    from pf_ray.data.synthetic import generate, image_png
    from pf_ray.specs import StorageConfig

    ds = Dataset(str(root), StorageConfig())
    ids: list[str] = []
    for s in range(shards):
        start = s * rows
        batch = generate(seed, start, start + rows)
        for k in range(rows):
            index = start + k
            if batch["image_bytes"][k] is not None and index % two_every == 0:
                batch["extra_images"][k] = [{"image": None,
                                             "image_bytes": image_png(seed + 1, index, 64)}]
            if index in broken:
                batch["image"][k], batch["image_bytes"][k] = None, BROKEN
        name = f"s{s:03d}"
        ds.write_data(f"{name}.parquet", to_table(batch, SAMPLE_SCHEMA),
                      pa.Table.from_pylist([], schema=REJECT_SCHEMA))
        ds.commit(name, {"files": [f"{name}.parquet"], "reject_files": [], "rows": rows,
                         "rejects": 0})
        ids += batch["id"]
    return ids
