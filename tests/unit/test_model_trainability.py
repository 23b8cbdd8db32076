"""Trainable-parameter sets per assignment are exactly as declared."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.model.trainability import (
    DEFAULT,
    PARTS,
    STAGES,
    Trainability,
    apply_trainability,
    count_by_part,
    parameter_parts,
    trainable_names,
)

# each part as a rule on names, written independently of trainability.part_of
RULES = {
    "vision": lambda n: n.startswith("vision_encoder."),
    "perceiver": lambda n: n.startswith("perceiver."),
    "xattn_attn": lambda n: re.match(r"gated_cross_attn_layers\.\d+\.(attn\.|attn_gate$)", n),
    "xattn_ffn": lambda n: re.match(r"gated_cross_attn_layers\.\d+\.(ff\.|ff_gate$)", n),
    "lm_lora": lambda n: "lora_A" in n or "lora_B" in n,
    "lm_embeddings": lambda n: n == "lang_encoder.model.embed_tokens.weight",
    "lm_full": lambda n: n.startswith("lang_encoder.") and "lora_" not in n
    and n != "lang_encoder.model.embed_tokens.weight",
}


@pytest.fixture(scope="module")
def model():
    return build_flamingo(get_preset("tiny"), device="meta")


def test_parts_partition_the_parameters(model):
    parts = parameter_parts(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(itertools.chain.from_iterable(parts.values())) == sorted(names)
    for part, members in parts.items():
        assert members, part
        assert members == [n for n in names if RULES[part](n)], part
    assert "lang_encoder.lm_head.weight" in parts["lm_full"]


ASSIGNMENTS = [*STAGES.values(), DEFAULT,
               *(Trainability(**{p: True}) for p in PARTS),
               Trainability(**dict.fromkeys(PARTS, True)),
               Trainability(vision=True, lm_full=True)]


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: "+".join(a.trainable_parts) or "none")
def test_trainable_set_is_exactly_the_declared_parts(model, assignment):
    apply_trainability(model, Trainability(**dict.fromkeys(PARTS, True)))  # no inheritance
    by_part = apply_trainability(model, assignment)
    want = {n for n, _ in model.named_parameters()
            if any(RULES[p](n) for p in assignment.trainable_parts)}
    got = {n for n, p in model.named_parameters() if p.requires_grad}
    assert got == want
    assert set(itertools.chain.from_iterable(by_part.values())) == want
    assert all(not by_part[p] for p in PARTS if p not in assignment.trainable_parts)


def test_a_built_model_starts_with_the_default_assignment(model):
    fresh = build_flamingo(get_preset("tiny"), device="meta")
    assert {p for p, names in trainable_names(fresh).items() if names} == set(DEFAULT.trainable_parts)
    assert not any(p.requires_grad for p in fresh.vision_encoder.parameters())


def test_assignments_from_dicts_and_their_errors(model):
    apply_trainability(model, {"perceiver": True, "xattn_attn": True})
    assert {p for p, n in trainable_names(model).items() if n} == {"perceiver", "xattn_attn"}
    with pytest.raises(ValueError, match="lora: unknown part .*allowed: vision, perceiver"):
        Trainability.from_dict({"lora": True})
    with pytest.raises(ValueError, match="vision: received 'yes'; allowed: true or false"):
        Trainability.from_dict({"vision": "yes"})


def test_tied_embeddings_count_once_as_lm_embeddings():
    cfg = get_preset("tiny-qwen2")
    hf = {**cfg.lm.hf_config, "tie_word_embeddings": True}
    tied = build_flamingo(cfg.replace(lm=type(cfg.lm)(hf_config=hf)), device="meta")
    parts = parameter_parts(tied)
    assert parts["lm_embeddings"] == ["lang_encoder.model.embed_tokens.weight"]
    assert not any("lm_head" in n for n in parts["lm_full"])
    apply_trainability(tied, {"lm_embeddings": True})
    assert tied.lang_encoder.lm_head.weight.requires_grad


def test_paper_stage_sizes_on_the_9b_layout():
    """Spec Table 4: LoRA stages train 0.29B, stage 2 trains 0.1B (meta device: no memory)."""
    big = build_flamingo(get_preset("openflamingo-9b-v1"), device="meta")
    for stage, expected in (("polite_flamingo", 159_907_840 + 131_084_288),
                            ("clever_s2", 63_019_008 + 42_008_584)):
        apply_trainability(big, STAGES[stage])
        assert sum(count_by_part(big, trainable_only=True).values()) == expected, stage
    assert torch.device("meta") == big.perceiver.latents.device
