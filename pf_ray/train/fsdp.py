"""FSDP2 wrapping and activation checkpointing, kept apart from the model.

Units, each gathered only while it computes: the vision tower, each gated cross-attention
block, each decoder layer, the input embeddings and the output head (when they are not
tied), and the root (perceiver, final norm). At 9B the cross-attention blocks hold ~1.1B
parameters: in the root they would stay gathered for the whole step. The perceiver (63M
at 9B) stays in the root: its output is a view of its latents, and a unit that returns a
view makes FSDP2 warn on every step that in-place ops on it would skip its gradient hook.
"""

from __future__ import annotations

import torch
from torch import nn


def shard_model(model: nn.Module, *, device_type: str, world_size: int,
                param_dtype: torch.dtype | None = None) -> nn.Module:
    """``fully_shard`` the model in place on a 1-D mesh of ``world_size`` ranks.

    ``param_dtype``: the dtype parameters are gathered (and computed) in, e.g. bfloat16 over
    float32 masters; None: as stored. Gradients are reduced in float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kwargs = {"mesh": mesh, "mp_policy": policy}
    fully_shard(model.vision_encoder, **kwargs)
    for block in model.gated_cross_attn_layers.values():
        fully_shard(block, **kwargs)
    for layer in model.decoder_layers:
        fully_shard(layer, **kwargs)
    lm = model.lang_encoder
    embeddings, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if head is None or head.weight is not embeddings.weight:  # tied: both stay in the root
        fully_shard(embeddings, **kwargs)
        if head is not None:
            fully_shard(head, **kwargs)
    fully_shard(model, **kwargs)
    return model


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass, through the language
    model's own switch (non-reentrant), and each cross-attention block's (which runs in the
    layer's forward pre-hook, outside what the LM checkpoints)."""
    lm = model.lang_encoder
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5 (the old name warns)
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for block in model.gated_cross_attn_layers.values():
        block.checkpointing = True
