"""Export a trained model as a pf-ray model folder (LoRA as adapters, or merged)."""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from pf_ray.train.spec import TrainSpec


def write_export(full_state: dict[str, torch.Tensor], spec: TrainSpec) -> None:
    """Load ``full_state`` into an unsharded copy of the model and save it to ``spec.export``."""
    import dataclasses

    import pyarrow.fs as pafs

    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer
    from pf_ray.storage import is_uri, resolve

    model = build_model(spec.model, seed=spec.seed)
    tokenizer = model_tokenizer(spec.model, model.config)
    missing, unexpected = model.load_state_dict(full_state, strict=False)
    if unexpected or [m for m in missing if m in dict(model.named_parameters())]:
        raise RuntimeError(f"export: state does not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    if spec.export_lora == "merged" and model.config.lora is not None:
        merge_lora(model)
        model.config = dataclasses.replace(model.config, lora=None)
    target = spec.export
    assert target is not None
    if not is_uri(target):
        save_pretrained(model, target, tokenizer)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, tokenizer)
        fs, base = resolve(target, spec.storage)
        pafs.copy_files(tmp, base, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def merge_lora(model: Any) -> None:
    """Fold LoRA deltas into the LM's weights (peft ``merge_and_unload``), keeping names."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    lm = model.lang_encoder
    if isinstance(lm, PeftModel):
        model.lang_encoder = lm.merge_and_unload()
        return
    # LoRA injected in place (inject_adapter_in_model): merge each layer, then put its base
    # Linear back where it was, so the LM's parameter names are the plain ones again
    for name, module in list(lm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(lm.get_submodule(parent_name) if parent_name else lm, child,
                    module.get_base_layer())
