"""FSDP2 wrapping, kept apart from the model: the vision tower is one unit, each decoder
layer one unit, the root (perceiver, cross-attention blocks, embeddings, head) the last."""

from __future__ import annotations

import torch
from torch import nn


def shard_model(model: nn.Module, *, device_type: str, world_size: int,
                bf16: bool = False) -> nn.Module:
    """``fully_shard`` the model in place on a 1-D mesh of ``world_size`` ranks.

    With ``bf16`` parameters are gathered in bfloat16 and gradients reduced in float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if bf16 else MixedPrecisionPolicy()
    kwargs = {"mesh": mesh, "mp_policy": policy}
    fully_shard(model.vision_encoder, **kwargs)
    for layer in model.decoder_layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model
