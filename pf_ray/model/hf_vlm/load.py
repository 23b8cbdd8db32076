"""Loading an ``hf_vlm`` model folder: a transformers image-text-to-text model + processor.

A folder (local, a URI copied once per machine, or an ``hf_vlm`` preset name) holds the
base model as transformers saves it (``config.json``, safetensors, processor and tokenizer
files, ``chat_template``) and, from a training export, ``adapter/``: a peft LoRA adapter
over the language model (what vLLM loads with ``enable_lora``). :func:`load_vlm` applies
the adapter (merged into the weights for generation). ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig

ADAPTER_DIR = "adapter"


def vlm_folder(source: str, storage: StorageConfig | None = None) -> str:
    """A local folder of ``source``: an ``hf_vlm`` preset (written once into the cache),
    a folder, or a URI's cached copy; :class:`ModelUnavailable` when there is none."""
    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder, is_hf_vlm_preset
    from pf_ray.storage import local_copy

    try:
        folder = (str(hf_vlm_preset_folder(source)) if is_hf_vlm_preset(source)
                  else local_copy(source, storage))
    except Exception as exc:  # noqa: BLE001 - whatever stops the copy: the model is not there
        raise ModelUnavailable(f"model {source!r}: cannot be copied or found "
                               f"({type(exc).__name__}: {exc})") from exc
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise ModelUnavailable(f"model {source!r}: no config.json there (an hf_vlm model "
                               "folder: a transformers save_pretrained folder)")
    return folder


def load_vlm(source: str, *, storage: StorageConfig | None = None, device: str = "auto",
             dtype: str = "auto", num_threads: int | None = None,
             merge_adapter: bool = True) -> tuple[Any, Any]:
    """``(model, processor)`` of an ``hf_vlm`` folder, in eval mode on ``device``; its
    ``adapter/`` applied (merged with ``merge_adapter``). Raises :class:`ModelUnavailable`
    when the folder is missing or cannot be loaded (an infrastructure fault, never rejects).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pf_ray.model.hf_vlm.family import check_folder_family

    folder = vlm_folder(source, storage)
    if num_threads:
        torch.set_num_threads(num_threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        check_folder_family(folder, "hf_vlm")
        kwargs: dict[str, Any] = {"trust_remote_code": False}
        if dtype != "auto":
            kwargs["dtype"] = getattr(torch, dtype)
        model = AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        adapter = Path(folder) / ADAPTER_DIR
        if adapter.is_dir():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
            if merge_adapter:
                model = model.merge_and_unload()
    except ModelUnavailable:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(f"model {source!r}: cannot load as an hf_vlm model: "
                               f"{type(exc).__name__}: {exc}"[:2000]) from exc
    processor.tokenizer.padding_side = "left"
    return model.to(device).eval(), processor
