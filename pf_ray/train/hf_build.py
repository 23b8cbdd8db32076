"""The ``hf_vlm`` model a training rank trains: LoRA, per-part trainability, fp32 masters, FSDP2.

A spec's ``model`` is a transformers image-text-to-text folder (an ``hf_vlm`` preset, a
folder, a URI copied once per machine, or an earlier stage's export). Its LoRA:

- the folder holds ``adapter/`` (an earlier stage's export): that adapter is loaded into
  LoRA layers of its own settings and **continues**: trained again when the stage trains
  ``lm_lora`` (stage 3 after stage 1, as in the paper's U-shaped tuning), frozen otherwise
  (stage 2), and written again by the export. This is what the Flamingo family does (its
  LoRA lives in the model's config and adapter, and every stage builds it);
- otherwise, a stage that trains ``lm_lora`` adds a fresh LoRA (``spec.lora``, B = 0) to the
  language model only (:func:`pf_ray.model.hf_vlm.parts.add_lm_lora`);
- otherwise (stage 2 from a base model) there is no LoRA.

Then the stage's assignment (``spec.hf_parts()``) sets ``requires_grad`` per part, and the
trainable parameters are kept in float32 (the master copy, as :mod:`pf_ray.train.build`):
frozen weights stay in the folder's dtype.

Sharded (FSDP2, :mod:`pf_ray.train.hf_fsdp`): rank 0 loads the folder through transformers
(``from_pretrained``: whatever key layout the folder was saved in) and prepares it; every
other rank builds the same model with meta parameters (real buffers); all shard, and rank 0
scatters each tensor (``broadcast_from_rank0``): only rank 0 ever holds the whole model, once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from pf_ray.train.build import BuiltModel, compute_dtype, materialise, upcast_trainable
from pf_ray.train.memory import peak_private_memory
from pf_ray.train.spec import TrainSpec


def adapter_dir(folder: str) -> str:
    from pf_ray.model.hf_vlm.load import ADAPTER_DIR

    return os.path.join(folder, ADAPTER_DIR)


def stage_lora(spec: TrainSpec, folder: str) -> Any:
    """The peft ``LoraConfig`` the stage's model carries (module doc), or None.

    An explicit ``spec.lora`` that differs from the folder's adapter raises, naming both.
    """
    import peft

    from pf_ray.model.hf_vlm.parts import lm_lora_config

    adapter = adapter_dir(folder)
    if os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        config = peft.LoraConfig.from_pretrained(adapter)
        check_lora_matches(spec, config, adapter)
        return config
    if spec.hf_parts()["lm_lora"]:
        return lm_lora_config(spec.lora_settings())
    return None


def check_lora_matches(spec: TrainSpec, adapter: Any, where: str) -> None:
    """``spec.lora`` (when given) must be the adapter's own settings: an adapter continues."""
    from pf_ray.model.hf_vlm.parts import lm_lora_pattern

    if spec.lora is None:
        return
    ours = {"r": spec.lora.r, "lora_alpha": spec.lora.alpha,
            "lora_dropout": spec.lora.dropout,
            "target_modules": lm_lora_pattern(tuple(spec.lora.target_modules))}
    theirs = {k: getattr(adapter, k) if not isinstance(adapter, dict) else adapter.get(k)
              for k in ours}
    if isinstance(theirs["target_modules"], (list, set, tuple)):
        theirs["target_modules"] = lm_lora_pattern(tuple(sorted(theirs["target_modules"])))
        ours["target_modules"] = lm_lora_pattern(tuple(sorted(spec.lora.target_modules)))
    diff = [f"{k}: spec {ours[k]!r}, adapter {theirs[k]!r}" for k in ours
            if ours[k] != theirs[k]]
    if diff:
        raise ValueError(f"lora: the model's {where} (an earlier stage's LoRA, which this "
                         f"stage continues) has other settings ({'; '.join(diff)}); remove "
                         "the lora block, or start from a folder without adapter/ (an export "
                         "with export_lora: merged)")


def _dtype(config: Any) -> torch.dtype | None:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype if isinstance(dtype, torch.dtype) else None


def load_base(folder: str, *, meta: bool) -> nn.Module:
    """The folder's model without its adapter, in the folder's dtype: its weights
    (``meta=False``) or meta parameters with real buffers (``meta=True``)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    dtype = _dtype(config)
    if not meta:
        return AutoModelForImageTextToText.from_pretrained(
            folder, trust_remote_code=False, **({"dtype": dtype} if dtype else {}))
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(
            config, trust_remote_code=False, **({"dtype": dtype} if dtype else {}))
    # init_empty_weights re-creates every parameter it sees registered, the tied head too
    # (SmolVLM ties it to the embeddings): tie them again, as from_pretrained leaves them
    model.tie_weights()
    return model


def prepared_model(spec: TrainSpec, folder: str, lora: Any, *, meta: bool) -> nn.Module:
    """The folder's model with the stage's LoRA (the folder's adapter loaded unless
    ``meta``), trainability applied, trainable weights fp32, activation checkpointing."""
    from pf_ray.model.hf_vlm.parts import apply_trainability, inject_lora
    from pf_ray.model.lora import load_adapter
    from pf_ray.train.hf_fsdp import enable_hf_activation_checkpointing

    model = load_base(folder, meta=meta)
    if lora is not None:
        inject_lora(model, lora)
        if not meta and os.path.isdir(adapter_dir(folder)):
            load_adapter(model, adapter_dir(folder))  # peft keys: every one must match
    apply_trainability(model, spec.hf_parts())
    upcast_trainable(model)
    if spec.activation_checkpointing:
        enable_hf_activation_checkpointing(model)
    return model


def build_hf_for_training(spec: TrainSpec, *, device: torch.device, sharded: bool, rank: int,
                          world: int, bf16: bool) -> BuiltModel:
    """The rank's ``hf_vlm`` model (module doc); ``sharded``: FSDP2 over ``world`` ranks (a
    process group must be initialised)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from pf_ray.model.hf_vlm.family import check_folder_family
    from pf_ray.model.hf_vlm.load import vlm_folder
    from pf_ray.train.hf_fsdp import shard_hf_model

    folder = vlm_folder(spec.model, spec.storage)
    check_folder_family(folder, "hf_vlm")
    lora = stage_lora(spec, folder)
    with peak_private_memory() as peak:
        if not sharded:
            model = prepared_model(spec, folder, lora, meta=False).to(device)
        else:
            full: dict[str, torch.Tensor] = {}
            if rank == 0:
                whole = prepared_model(spec, folder, lora, meta=False)
                full = whole.state_dict()
                del whole
            model = prepared_model(spec, folder, lora, meta=True)
            shard_hf_model(model, device_type=device.type, world_size=world,
                           param_dtype=compute_dtype(model, bf16))
            materialise(model, device)
            set_model_state_dict(model, full, options=StateDictOptions(
                full_state_dict=True, broadcast_from_rank0=True))
            del full
    return BuiltModel(model, peak["bytes"], sharded)


def hf_decays(name: str) -> bool:
    """Whether AdamW's weight decay applies to a parameter: the connector's (what the
    Flamingo family's decayed cross-attention is to this family)."""
    from pf_ray.model.hf_vlm.parts import part_of

    try:
        return part_of(name) == "connector"
    except ValueError:
        return False


def _read_json(location: str, storage: Any) -> dict[str, Any] | None:
    """A JSON file of a local folder or a URI, read in place (None when it is not there)."""
    from pf_ray.storage import exists, is_uri, read_bytes, resolve

    if not is_uri(location):
        return json.loads(open(location).read()) if os.path.isfile(location) else None
    fs, path = resolve(location, storage)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else None


def _a(family: str) -> str:
    return f"an {family}" if family[0] in "aeiouh" else f"a {family}"


def check_spec_model(spec: TrainSpec) -> None:
    """At run start: ``spec.model`` is of ``spec.model_family`` (a preset of that family, or
    a folder whose ``config.json`` is), and an explicit ``lora`` block matches the folder's
    adapter. Only ``config.json`` (and ``adapter/adapter_config.json``) are read, in place.
    A folder that cannot be read is left to the loaders, which name it."""
    from pf_ray.model.hf_vlm.family import folder_family, is_hf_vlm_preset
    from pf_ray.model.loading import is_preset
    from pf_ray.storage import is_uri, join

    model, family = spec.model, spec.model_family
    if is_hf_vlm_preset(model) or is_preset(model):
        found = "hf_vlm" if is_hf_vlm_preset(model) else "flamingo"
        if found != family:
            raise ValueError(f"model {model!r} is {_a(found)} preset, but the spec's family is "
                             f"{family!r}; write model: {{family: {found}, path: {model}}} "
                             "(or the bare preset name)")
        return
    config = _read_json(join(model, "config.json") if is_uri(model)
                        else os.path.join(model, "config.json"), spec.storage)
    if config is None:
        return
    found = folder_family(config)
    if found != family:
        what = (f"config.json model_type {config.get('model_type')!r}" if found == "hf_vlm"
                else "a pf-ray Flamingo config.json")
        hint = ("model: {family: hf_vlm, path: ...}" if found == "hf_vlm"
                else "model: <path> (family flamingo)")
        raise ValueError(f"model {model!r} is {_a(found)} model folder ({what}), but the "
                         f"spec's family is {family!r}; write {hint}")
    if family == "hf_vlm" and spec.lora is not None:
        where = join(model, "adapter/adapter_config.json") if is_uri(model) else os.path.join(
            model, "adapter", "adapter_config.json")
        adapter = _read_json(where, spec.storage)
        if adapter is not None:
            check_lora_matches(spec, adapter, "adapter/")
