"""Which parts of an ``hf_vlm`` model train: the same stage assignments as the Flamingo family.

Every parameter of a transformers image-text-to-text model belongs to one part:

    vision         the vision tower      (Idefics3/SmolVLM ``model.vision_model``, LLaVA
                                          ``model.vision_tower``, Qwen2-VL ``model.visual``)
    connector      what maps image features into the LM (Idefics3 ``model.connector``,
                                          LLaVA ``model.multi_modal_projector``, Qwen2-VL
                                          ``model.visual.merger``)
    lm_lora        LoRA weights inside the language model
    lm_embeddings  the LM's input embedding matrix (the output head too only if tied)
    lm_full        every other LM parameter (decoder layers, norms, untied ``lm_head``)

A Flamingo :class:`~pf_ray.model.trainability.Trainability` maps onto these parts: what
Flamingo adds between the tower and the LM (perceiver, cross-attention) is this family's
connector, so stage 2 of the U-shaped tuning (perceiver + cross-attention) trains the
connector only, and the rewriter / stages 1 and 3 (LoRA + embeddings) the same LM parts.

LoRA goes into the language model only. Bare names such as ``q_proj`` also match the vision
tower of Idefics3/SmolVLM (its attention has ``q_proj``/``k_proj``/``v_proj``/``out_proj``)
and vLLM drops adapters on the tower, so the target is a regular expression anchored at the
LM (:func:`lm_lora_pattern`), which peft matches against full module names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from pf_ray.model.config import LoraSettings
from pf_ray.model.lora import is_lora_name
from pf_ray.model.trainability import Trainability

HF_PARTS = ("vision", "connector", "lm_lora", "lm_embeddings", "lm_full")
# module-name prefixes per part, checked in order (the merger inside Qwen2-VL's visual
# module is its connector, so connector prefixes come first)
_CONNECTOR = ("model.connector.", "model.multi_modal_projector.", "model.visual.merger.")
_VISION = ("model.vision_model.", "model.vision_tower.", "model.visual.")
_LM = ("model.text_model.", "model.language_model.", "lm_head.")
LM_MODULES = ("text_model", "language_model")


def hf_assignment(t: Trainability | Mapping[str, bool]) -> dict[str, bool]:
    """A Flamingo-part assignment as this family's parts (module doc)."""
    if not isinstance(t, Trainability):
        t = Trainability.from_dict(t)
    return {"vision": t.vision, "connector": t.perceiver or t.xattn_attn or t.xattn_ffn,
            "lm_lora": t.lm_lora, "lm_embeddings": t.lm_embeddings, "lm_full": t.lm_full}


def _embedding_names(model: nn.Module) -> set[str]:
    weight = model.get_input_embeddings().weight
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is weight}


def part_of(name: str, embedding_names: set[str] | frozenset[str] = frozenset()) -> str:
    """The part of a parameter name (module doc); a name of no part raises, naming it."""
    if name.startswith(_CONNECTOR):
        return "connector"
    if name.startswith(_VISION):
        return "vision"
    if name.startswith(_LM):
        if is_lora_name(name):
            return "lm_lora"
        return "lm_embeddings" if name in embedding_names else "lm_full"
    raise ValueError(f"parameter {name!r} belongs to no part of an hf_vlm model (known "
                     f"prefixes: {', '.join(_CONNECTOR + _VISION + _LM)})")


def apply_trainability(model: nn.Module,
                       assignment: Trainability | Mapping[str, bool]) -> dict[str, list[str]]:
    """Set ``requires_grad`` of every parameter from its part (the assignment in Flamingo
    parts, or already in this family's); returns the trainable names by part."""
    parts = dict(assignment) if isinstance(assignment, Mapping) and set(assignment) <= set(
        HF_PARTS) else hf_assignment(assignment)
    emb = _embedding_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(bool(parts.get(part_of(name, emb), False)))
    return trainable_names(model)


def trainable_names(model: nn.Module) -> dict[str, list[str]]:
    """Names of parameters with ``requires_grad``, by part."""
    emb = _embedding_names(model)
    out: dict[str, list[str]] = {p: [] for p in HF_PARTS}
    for name, param in model.named_parameters():
        if param.requires_grad:
            out[part_of(name, emb)].append(name)
    return out


def count_by_part(model: nn.Module, trainable_only: bool = False) -> dict[str, int]:
    emb = _embedding_names(model)
    out = dict.fromkeys(HF_PARTS, 0)
    for name, param in model.named_parameters():
        if param.requires_grad or not trainable_only:
            out[part_of(name, emb)] += param.numel()
    return out


def lm_lora_pattern(targets: tuple[str, ...]) -> str:
    """A peft ``target_modules`` regex matching ``targets`` inside the language model only."""
    names = "|".join(re.escape(t) for t in targets)
    return rf"^model\.({'|'.join(LM_MODULES)})\..*\.({names})$"


def lm_lora_config(settings: LoraSettings) -> Any:
    """The peft ``LoraConfig`` of ``settings`` with its targets inside the LM only (what
    :func:`add_lm_lora` injects and a training export writes as ``adapter_config.json``)."""
    import peft

    return peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha,
                           lora_dropout=settings.dropout,
                           target_modules=lm_lora_pattern(settings.target_modules),
                           bias="none")


def add_lm_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Inject LoRA (B = 0: outputs unchanged) into the LM's ``settings.target_modules``;
    returns the adapted module names. Raises when nothing matched, naming the targets."""
    return inject_lora(model, lm_lora_config(settings))


def inject_lora(model: nn.Module, config: Any) -> list[str]:
    """Inject the LoRA of a peft ``LoraConfig`` (e.g. an adapter folder's, continued by a
    later training stage); returns the adapted module names. Raises when nothing matched,
    or when a match lies outside the language model (vLLM serves LoRA on the LM only)."""
    import peft

    from pf_ray.model.lora import ADAPTER

    try:
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        if "not found" not in str(exc):
            raise
    adapted = sorted({n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters()
                      if is_lora_name(n)})
    if not adapted:
        raise ValueError(f"lora.target_modules {config.target_modules!r} matched no "
                         f"module of {type(model).__name__}'s language model")
    outside = [n for n in adapted if not n.startswith(_LM)]
    if outside:
        raise ValueError(f"lora.target_modules {config.target_modules!r} matched modules "
                         f"outside the language model: {outside[:3]}")
    return adapted


def vision_module(model: nn.Module) -> nn.Module:
    """The vision tower (FSDP wraps it as one unit)."""
    inner = model.get_submodule("model")
    for name in ("vision_model", "vision_tower", "visual"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise ValueError(f"{type(model).__name__}: no vision tower among vision_model, "
                     "vision_tower, visual")


def language_model(model: nn.Module) -> nn.Module:
    inner = model.get_submodule("model")
    for name in LM_MODULES:
        if hasattr(inner, name):
            return getattr(inner, name)
    raise ValueError(f"{type(model).__name__}: no language model among {LM_MODULES}")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The language model's decoder blocks (FSDP wraps each as one unit)."""
    return list(language_model(model).layers)
