"""Export a trained model as a pf-ray model folder (LoRA as adapters, or merged)."""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from pf_ray.train.spec import TrainSpec


def write_export(full_state: dict[str, torch.Tensor], spec: TrainSpec) -> None:
    """Save ``full_state`` (every tensor of the trained model) to ``spec.export``.

    The model is built on the meta device and takes ``full_state``'s tensors as they are
    (``assign``), cast to the model's dtype (trainable weights were fp32 masters): the
    export holds one copy of the weights in host memory, not two.
    """
    import dataclasses

    import pyarrow.fs as pafs

    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.loading import model_config, model_tokenizer
    from pf_ray.storage import is_uri, resolve

    config = model_config(spec.model)
    config = config.replace(vision=dataclasses.replace(config.vision, pretrained=None),
                            lm=dataclasses.replace(config.lm, pretrained=None))
    model = build_flamingo(config, device="meta")
    tokenizer = model_tokenizer(spec.model, config)
    dtype = getattr(torch, config.dtype)
    merging = spec.export_lora == "merged" and config.lora is not None
    # merging adds the LoRA delta to the base weights in place: copy those, never the caller's
    state = {k: v.to(dtype, copy=merging and ".base_layer." in k) if v.is_floating_point()
             else v for k, v in full_state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or [m for m in missing if m in dict(model.named_parameters())]:
        raise RuntimeError(f"export: state does not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    if merging:
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
