"""Which parts of the model train: a training stage is one :class:`Trainability` assignment.

Every parameter belongs to exactly one part:

    vision         vision_encoder.*
    perceiver      perceiver.*
    xattn_attn     gated_cross_attn_layers.{i}.attn.* and .attn_gate
    xattn_ffn      gated_cross_attn_layers.{i}.ff.* and .ff_gate
    lm_lora        lang_encoder.*.lora_A / lora_B
    lm_embeddings  the LM's input embedding matrix (the output head too only if tied to it)
    lm_full        every other LM parameter (decoder layers, norms, untied lm_head)

``apply_trainability(model, assignment)`` sets ``requires_grad`` of every parameter to its
part's value, so a stage is fully described by its assignment (nothing inherited from an
earlier stage). The paper's stages are in :data:`STAGES` (paper.md §3 Table 4): "LoRA (0.29B)"
= lm_lora (160M) + lm_embeddings (32003*4096 = 131M); "Perceiver + XATTN attention (0.1B)"
= perceiver (63M) + xattn_attn (42M).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from pf_ray.model.lora import is_lora_name

PARTS = ("vision", "perceiver", "xattn_attn", "xattn_ffn", "lm_lora", "lm_embeddings", "lm_full")
_XATTN = re.compile(r"^gated_cross_attn_layers\.\d+\.(attn\.|attn_gate$|ff\.|ff_gate$)")


@dataclass(frozen=True)
class Trainability:
    vision: bool = False
    perceiver: bool = False
    xattn_attn: bool = False
    xattn_ffn: bool = False
    lm_lora: bool = False
    lm_embeddings: bool = False
    lm_full: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, bool]) -> Trainability:
        errors = [f"{k}: unknown part (received {v!r}); allowed: {', '.join(PARTS)}"
                  for k, v in data.items() if k not in PARTS]
        errors += [f"{k}: received {v!r}; allowed: true or false"
                   for k, v in data.items() if k in PARTS and not isinstance(v, bool)]
        if errors:
            raise ValueError("trainability: " + "; ".join(errors))
        return cls(**dict(data))

    def as_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    @property
    def trainable_parts(self) -> tuple[str, ...]:
        return tuple(p for p in PARTS if getattr(self, p))


# OpenFlamingo's own training set, applied when a model is built: the vision tower and the
# LM's base weights frozen, everything Flamingo adds (and LoRA, when present) trainable.
DEFAULT = Trainability(perceiver=True, xattn_attn=True, xattn_ffn=True, lm_lora=True,
                       lm_embeddings=True)

STAGES: dict[str, Trainability] = {
    "polite_flamingo": Trainability(lm_lora=True, lm_embeddings=True),
    "clever_s1": Trainability(lm_lora=True, lm_embeddings=True),
    "clever_s2": Trainability(perceiver=True, xattn_attn=True),
    "clever_s3": Trainability(lm_lora=True, lm_embeddings=True),
    "openflamingo_pretrain": Trainability(perceiver=True, xattn_attn=True, xattn_ffn=True,
                                          lm_embeddings=True),
    "frozen": Trainability(),
}


def _embedding_names(model: nn.Module) -> set[str]:
    lm = model.get_submodule("lang_encoder")
    weight = lm.get_input_embeddings().weight
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is weight}


def part_of(name: str, embedding_names: set[str] | frozenset[str] = frozenset()) -> str:
    """The part a parameter name belongs to (see the module doc)."""
    if name.startswith("vision_encoder."):
        return "vision"
    if name.startswith("perceiver."):
        return "perceiver"
    m = _XATTN.match(name)
    if m:
        return "xattn_attn" if m.group(1).startswith("attn") else "xattn_ffn"
    if name.startswith("lang_encoder."):
        if is_lora_name(name):
            return "lm_lora"
        return "lm_embeddings" if name in embedding_names else "lm_full"
    raise ValueError(f"parameter {name!r} belongs to no part; parts: {', '.join(PARTS)}")


def parameter_parts(model: nn.Module) -> dict[str, list[str]]:
    """Every parameter name, by part (parts with no parameters map to [])."""
    emb = _embedding_names(model)
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for name, _ in model.named_parameters():
        out[part_of(name, emb)].append(name)
    return out


def apply_trainability(model: nn.Module,
                       assignment: Trainability | Mapping[str, bool]) -> dict[str, list[str]]:
    """Set ``requires_grad`` of every parameter from its part; returns trainable names by part."""
    if not isinstance(assignment, Trainability):
        assignment = Trainability.from_dict(assignment)
    emb = _embedding_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(getattr(assignment, part_of(name, emb)))
    return trainable_names(model)


def trainable_names(model: nn.Module) -> dict[str, list[str]]:
    """Names of parameters with ``requires_grad``, by part."""
    emb = _embedding_names(model)
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for name, param in model.named_parameters():
        if param.requires_grad:
            out[part_of(name, emb)].append(name)
    return out


def count_by_part(model: nn.Module, trainable_only: bool = False) -> dict[str, int]:
    """Number of parameters per part (optionally only the trainable ones)."""
    emb = _embedding_names(model)
    out = dict.fromkeys(PARTS, 0)
    for name, param in model.named_parameters():
        if param.requires_grad or not trainable_only:
            out[part_of(name, emb)] += param.numel()
    return out
