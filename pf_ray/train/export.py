"""Export a trained model as a pf-ray model folder (LoRA as adapters, or merged).

The folder's completion marker, ``_export.json`` (run name, stage, step, ``committed_at``),
is written last, as ``pf_ray.data.io`` commits a shard: an export without it is partial
(or being rewritten), and only a complete one lets a rerun skip the stage
(:func:`pf_ray.train.launch.finished_stage`).
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

import torch

from pf_ray.train.spec import TrainSpec

EXPORT_MARKER = "_export.json"


def write_export(full_state: dict[str, torch.Tensor], spec: TrainSpec,
                 step: int | None = None) -> None:
    """Save ``full_state`` (every tensor of the trained model) to ``spec.export``, its
    marker last. ``step``: the step trained to (None: the last in the run's metrics).

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

    config = model_config(spec.model, spec.storage).without_pretrained()
    model = build_flamingo(config, device="meta")
    tokenizer = model_tokenizer(spec.model, config, spec.storage)
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
    _remove_marker(spec)  # a folder being (re)written is not complete
    if not is_uri(target):
        save_pretrained(model, target, tokenizer)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            save_pretrained(model, tmp, tokenizer)
            fs, base = resolve(target, spec.storage)
            pafs.copy_files(tmp, base, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
    _write_marker(spec, step)


def _marker_path(spec: TrainSpec) -> tuple[Any, str]:
    """The filesystem and path of ``spec.export``'s completion marker."""
    from pf_ray.storage import join, resolve

    assert spec.export is not None
    return resolve(join(spec.export, EXPORT_MARKER), spec.storage)


def export_marker(spec: TrainSpec) -> dict[str, Any] | None:
    """The completion marker of ``spec.export``; None when there is no complete export."""
    from pf_ray.storage import exists, read_bytes

    if spec.export is None:
        return None
    fs, path = _marker_path(spec)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else None


def _write_marker(spec: TrainSpec, step: int | None) -> None:
    from pf_ray.storage import write_bytes_atomic
    from pf_ray.train.launch import read_history

    if step is None:  # called outside a run (the loop passes its step)
        history = read_history(spec)
        step = int(history[-1]["step"]) if history else None
    marker = {"run_name": spec.run_name, "stage": spec.stage, "model": spec.model,
              "step": step, "export_lora": spec.export_lora, "committed_at": time.time()}
    fs, path = _marker_path(spec)
    write_bytes_atomic(fs, path, json.dumps(marker, sort_keys=True, indent=1).encode())


def _remove_marker(spec: TrainSpec) -> None:
    from pf_ray.storage import exists

    fs, path = _marker_path(spec)
    if exists(fs, path):
        fs.delete_file(path)


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
