"""FSDP2 wrapping and activation checkpointing of an ``hf_vlm`` model, kept apart from it.

Units, each gathered only while it computes (as :mod:`pf_ray.train.fsdp` does for the
Flamingo family): the vision tower (one unit: at SmolVLM-256M 93M parameters, at LLaVA-7B's
CLIP ViT-L 303M), each decoder block of the language model, then the root: the connector,
the input embeddings, the final norm and the output head (tied to the embeddings in
SmolVLM). Every rank runs the vision tower and the connector on every micro-batch (a batch
without images gets a placeholder image, :func:`pf_ray.train.hf_data.collate_hf`), so the
ranks' collectives always pair up.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def shard_hf_model(model: nn.Module, *, device_type: str, world_size: int,
                   param_dtype: torch.dtype | None = None) -> nn.Module:
    """``fully_shard`` an ``hf_vlm`` model in place on a 1-D mesh of ``world_size`` ranks.

    ``param_dtype``: the dtype parameters are gathered (and computed) in; None: as stored.
    Gradients are reduced in float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from pf_ray.model.hf_vlm.parts import decoder_layers, vision_module

    # the root's output carries the vision features (image_outputs: CLIP's pooled output is a
    # view of its hidden states), on which FSDP2 warns that an in-place op would skip its
    # hook, once per rank; training reads the loss only
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP\w+\) returned "
                            r"a view tensor")
    mesh = init_device_mesh(device_type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kwargs = {"mesh": mesh, "mp_policy": policy}
    with keeping_output_capture(vision_module(model)):
        fully_shard(vision_module(model), **kwargs)
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    with keeping_output_capture(model):
        fully_shard(model, **kwargs)
    return model


@contextmanager
def keeping_output_capture(module: nn.Module) -> Iterator[None]:
    """Keep transformers' output capture working on ``module`` across ``fully_shard``.

    transformers >= 5 records ``hidden_states`` / ``attentions`` through hooks it installs
    from a registry keyed by the model's class name (``_CAN_RECORD_REGISTRY``); FSDP2 swaps
    the class of each module it shards for ``FSDP<Class>``, which the registry does not
    know, so the module returned ``hidden_states=None`` (LLaVA's vision tower:
    ``get_image_features`` then failed with "'NoneType' object is not subscriptable").
    The swapped class gets the original's entry.
    """
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # an older transformers: no such registry
        yield
        return
    entry = _CAN_RECORD_REGISTRY.get(module)
    yield
    if entry and not _CAN_RECORD_REGISTRY.get(module):
        _CAN_RECORD_REGISTRY[module] = entry


def enable_hf_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's (and vision layer's) activations in the backward pass,
    through transformers' own switch (non-reentrant)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5's newer name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
