"""Export a trained ``hf_vlm`` model: a transformers folder of the base, plus its LoRA adapter.

The folder (what :func:`pf_ray.model.hf_vlm.load.load_vlm`, vLLM and the next training
stage load)::

    config.json, model*.safetensors   the trained base model (``save_pretrained``): every
                                      non-LoRA weight as trained (a connector trained in
                                      stage 2, trained embeddings), in the folder's dtype
    generation_config.json            the source folder's (its stop tokens)
    processor / tokenizer files       the source folder's processor, chat template included
    adapter/                          when the model carries LoRA: a peft adapter folder,
                                      adapter_config.json + adapter_model.safetensors, keys
                                      ``base_model.model.model.text_model.layers.N.self_attn.
                                      q_proj.lora_A.weight`` (LoRA of the language model only)
    _export.json                      the completion marker, written last
                                      (:mod:`pf_ray.train.export`)

Trained non-LoRA weights always go into the base (never peft ``modules_to_save``, which
vLLM cannot serve). ``export_lora: merged`` folds the LoRA into the base weights
(W + B A alpha / r) and writes no ``adapter/``. An export replaces whatever the folder held
(an ``adapter/`` of an earlier export never outlives a merged one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import torch
from torch import nn

from pf_ray.train.spec import TrainSpec


def unwrap_lora(model: nn.Module, *, merge: bool) -> int:
    """Put each LoRA layer's base linear back where it was (merging its update into the
    base weight first when ``merge``), so the parameter names are the plain ones again;
    returns the number of layers unwrapped."""
    from peft.tuners.lora import LoraLayer

    done = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            if merge:
                module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    module.get_base_layer())
            done += 1
    return done


def export_state(full_state: dict[str, torch.Tensor], spec: TrainSpec) -> tuple[nn.Module,
                                                                                Any, dict]:
    """The trained model rebuilt from ``full_state`` (its tensors taken as they are, cast to
    the folder's dtype), its LoRA config (None: no LoRA) and the adapter tensors under peft's
    keys (``{}`` when merged or without LoRA). The model's LoRA layers are unwrapped."""
    from pf_ray.model.hf_vlm.load import vlm_folder
    from pf_ray.model.hf_vlm.parts import inject_lora
    from pf_ray.model.lora import is_lora_name, to_peft_key
    from pf_ray.train.hf_build import _dtype, load_base, stage_lora

    folder = vlm_folder(spec.model, spec.storage)
    lora = stage_lora(spec, folder)
    model = load_base(folder, meta=True)
    dtype = _dtype(model.config) or torch.float32
    if lora is not None:
        inject_lora(model, lora)
    merging = spec.export_lora == "merged" and lora is not None
    # merging adds the LoRA delta to the base weights in place: copy those, never the caller's
    state = {k: v.to(dtype, copy=merging and ".base_layer." in k) if v.is_floating_point()
             else v for k, v in full_state.items()}
    _, unexpected = model.load_state_dict(state, strict=False, assign=True)
    empty = [n for n, p in model.named_parameters() if p.is_meta]
    if unexpected or empty:
        raise RuntimeError(f"export: the state does not match the model (no value for "
                           f"{empty[:5]}, unexpected {unexpected[:5]})")
    if getattr(model.config.get_text_config(), "tie_word_embeddings", False) or getattr(
            model.config, "tie_word_embeddings", False):
        model.tie_weights()  # assign gave the head and the embeddings separate tensors
    adapter = {} if merging else {to_peft_key(n): p.detach().contiguous()
                                  for n, p in model.named_parameters() if is_lora_name(n)}
    unwrap_lora(model, merge=merging)
    return model, (None if merging else lora), adapter


def save_hf_folder(model: nn.Module, lora: Any, adapter: dict[str, torch.Tensor],
                   source: str, target: str) -> None:
    """Write the export folder's files (module doc) into the local folder ``target``."""
    from safetensors.torch import save_file
    from transformers import AutoProcessor, GenerationConfig

    from pf_ray.model.hf_vlm.load import ADAPTER_DIR

    if os.path.isfile(os.path.join(source, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(source)
    model.save_pretrained(target)
    AutoProcessor.from_pretrained(source, trust_remote_code=False).save_pretrained(target)
    if lora is not None and adapter:
        folder = os.path.join(target, ADAPTER_DIR)
        os.makedirs(folder, exist_ok=True)
        lora.save_pretrained(folder)
        save_file(adapter, os.path.join(folder, "adapter_model.safetensors"),
                  metadata={"format": "pt"})


def write_hf_export(full_state: dict[str, torch.Tensor], spec: TrainSpec,
                    step: int | None = None) -> None:
    """Save ``full_state`` (every tensor of the trained model, LoRA under its in-model
    names) to ``spec.export`` as the module doc's folder, its marker last. ``step``: the
    step trained to (None: the last in the run's metrics)."""
    import pyarrow.fs as pafs

    from pf_ray.model.hf_vlm.load import vlm_folder
    from pf_ray.storage import is_uri, resolve
    from pf_ray.train.export import _remove_marker, _write_marker

    target = spec.export
    assert target is not None
    model, lora, adapter = export_state(full_state, spec)
    source = vlm_folder(spec.model, spec.storage)
    _remove_marker(spec)  # a folder being (re)written is not complete
    if not is_uri(target):
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
        try:
            save_hf_folder(model, lora, adapter, source, tmp)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        fs, base = resolve(target, spec.storage)
        if fs.get_file_info(base).type != pafs.FileType.NotFound:
            fs.delete_dir_contents(base, missing_dir_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            save_hf_folder(model, lora, adapter, source, tmp)
            pafs.copy_files(tmp, base, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
    _write_marker(spec, step)
