"""The model a training rank trains: built without a full copy per rank, trainable in fp32.

Precision (FSDP2 mixed precision, as torchtitan): the parameters a stage trains are kept and
updated in float32 (AdamW's states follow them); frozen weights stay in the model's own
dtype (bfloat16 for the 9B preset). FSDP gathers every parameter in bfloat16 for compute
when bf16 is on (or when the model holds bfloat16 weights: one unit must gather one dtype)
and reduces gradients in float32. Without the fp32 master a stage-3 update (lr 1e-5) to a
LoRA weight of ~0.016 rounds away: bf16 spaces such numbers 6e-5 apart.

Construction, sharded (``fsdp`` on a process group):

- a model folder (a previous stage's export): every rank builds the model on the meta
  device (parameters only: buffers such as the rotary frequencies are computed for real),
  shards it, allocates its own shards and reads just their rows from ``model.safetensors``
  and the adapter through DCP's Hugging Face reader (safetensors slices, memory-mapped), so
  no rank ever holds the full model, in host or device memory;
- a preset (random weights, or the pretrained parts its config names): rank 0 builds it on
  the CPU (one copy per run), the other ranks on the meta device; after sharding rank 0
  broadcasts each tensor and every rank keeps its shard (``broadcast_from_rank0``).

Unsharded (one process, or ``fsdp: false``) the model is built whole, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from pf_ray.train.memory import peak_private_memory
from pf_ray.train.spec import TrainSpec


@dataclass
class BuiltModel:
    """A rank's model and what its construction cost in host memory."""

    model: nn.Module
    host_peak_bytes: int | None  # peak private-memory growth while building (Linux)
    sharded: bool


def compute_dtype(model: nn.Module, bf16: bool) -> torch.dtype | None:
    """The dtype FSDP gathers parameters in: bf16 when asked, or when some weights are bf16
    (a unit mixing fp32 trainable and bf16 frozen weights must gather one dtype); None: as
    stored."""
    if bf16 or any(p.dtype == torch.bfloat16 for p in model.parameters()):
        return torch.bfloat16
    return None


def upcast_trainable(model: nn.Module) -> int:
    """Keep every trainable parameter in float32 (the master copy); returns how many moved."""
    moved = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            moved += 1
    return moved


def build_for_training(spec: TrainSpec, *, device: torch.device, sharded: bool, rank: int,
                       world: int, bf16: bool) -> BuiltModel:
    """The rank's model, trainability applied, trainable weights in fp32, sharded when asked.

    ``sharded``: FSDP2 over ``world`` ranks (a process group must be initialised).
    """
    from pf_ray.model.loading import is_preset, model_folder
    from pf_ray.model.trainability import apply_trainability
    from pf_ray.train.fsdp import enable_activation_checkpointing, shard_model

    with peak_private_memory() as peak:
        if not sharded:
            from pf_ray.model.loading import build_model

            model = build_model(spec.model, seed=spec.seed, storage=spec.storage)
            apply_trainability(model, spec.trainability())
            upcast_trainable(model)
            if spec.activation_checkpointing:
                enable_activation_checkpointing(model)
            model = model.to(device)
        elif is_preset(spec.model):
            model = _from_rank0(spec, device=device, rank=rank, world=world, bf16=bf16)
        else:
            folder = model_folder(spec.model, spec.storage)
            model = meta_model(spec, folder)
            shard_model(model, device_type=device.type, world_size=world,
                        param_dtype=compute_dtype(model, bf16))
            materialise(model, device)
            load_folder_shards(model, folder)
    return BuiltModel(model, peak["bytes"], sharded)


def meta_model(spec: TrainSpec, folder: str | None) -> nn.Module:
    """The stage's model with meta parameters (real buffers), trainability applied, the
    trainable ones fp32. ``folder``: its model folder (None: ``spec.model`` is a preset)."""
    from pf_ray.model.checkpoint import read_config
    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.presets import get_preset
    from pf_ray.model.trainability import apply_trainability

    config = get_preset(spec.model) if folder is None else read_config(folder)
    # weights come from the folder (or rank 0): never read the original pretrained paths
    model = build_flamingo(config.without_pretrained(), device="meta")
    apply_trainability(model, spec.trainability())
    upcast_trainable(model)
    if spec.activation_checkpointing:
        from pf_ray.train.fsdp import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    return model


def materialise(model: nn.Module, device: torch.device) -> None:
    """Allocate the (sharded) meta parameters on ``device``; buffers keep their values."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, value in buffers.items():
            model.get_buffer(name).copy_(value)


def _from_rank0(spec: TrainSpec, *, device: torch.device, rank: int, world: int,
                bf16: bool) -> nn.Module:
    """A preset built once on rank 0 and scattered: every rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from pf_ray.model.loading import build_model
    from pf_ray.train.fsdp import shard_model

    full: dict[str, torch.Tensor] = {}
    if rank == 0:
        whole = build_model(spec.model, seed=spec.seed, storage=spec.storage)
        full = whole.state_dict()
        del whole
    model = meta_model(spec, None)
    shard_model(model, device_type=device.type, world_size=world,
                param_dtype=compute_dtype(model, bf16))
    materialise(model, device)
    set_model_state_dict(model, full, options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=True))
    return model


def load_folder_shards(model: nn.Module, folder: str) -> None:
    """Read this rank's rows of every tensor of a model folder into the sharded ``model``.

    ``model.safetensors`` holds the non-LoRA weights under canonical names (tied weights
    once), ``adapter/adapter_model.safetensors`` the LoRA weights under peft's keys (see
    :mod:`pf_ray.model.checkpoint`). DCP plans each rank's slices; a tensor the folder
    lacks raises, naming it.
    """
    import torch.distributed.checkpoint as dcp
    from safetensors import safe_open

    from pf_ray.model.checkpoint import ADAPTER_DIR, WEIGHTS_NAME, canonical_name
    from pf_ray.model.lora import is_lora_name, to_peft_key

    weights = os.path.join(folder, WEIGHTS_NAME)
    with safe_open(weights, framework="pt") as f:
        stored = set(f.keys())
    base: dict[str, torch.Tensor] = {}
    lora: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if is_lora_name(name):
            lora[to_peft_key(name.removeprefix("lang_encoder."))] = tensor
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        key = canonical_name(name)
        if key not in stored:  # a tied weight stored under its other name
            key = next((canonical_name(n) for n, t in model.state_dict(keep_vars=True).items()
                        if t is tensor and canonical_name(n) in stored), key)
        base[key] = tensor
    with torch.no_grad():
        dcp.load(base, storage_reader=dcp.HuggingFaceStorageReader(folder))
        if lora:
            dcp.load(lora, storage_reader=dcp.HuggingFaceStorageReader(
                os.path.join(folder, ADAPTER_DIR)))
