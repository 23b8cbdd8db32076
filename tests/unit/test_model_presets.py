"""Preset numbers (paper.md §3), checked on the meta device: nothing is allocated."""

from __future__ import annotations

import pytest

from pf_ray.model.config import FlamingoConfig
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import PRESETS, get_preset
from pf_ray.model.trainability import count_by_part


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    assert FlamingoConfig.from_dict(cfg.to_dict()) == cfg


def test_openflamingo_9b_config_numbers():
    cfg = get_preset("openflamingo-9b-v1")
    assert (cfg.vision.model_name, cfg.vision.width, cfg.vision.num_patches) == ("ViT-L-14-336", 1024, 576)
    p = cfg.perceiver
    assert (p.depth, p.num_latents, p.heads, p.dim_head, p.ff_mult) == (6, 64, 8, 64, 4)
    assert cfg.xattn_layers == [3, 7, 11, 15, 19, 23, 27, 31]  # (i+1) % 4 == 0: 8 blocks
    assert (cfg.xattn.heads, cfg.xattn.dim_head, cfg.xattn.ffn, cfg.xattn.mask) == (8, 64, True, "next_image")
    lm = cfg.lm.hf_config
    assert (lm["num_hidden_layers"], lm["hidden_size"], lm["vocab_size"]) == (32, 4096, 32003)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (64, 16, 0.1)
    assert set(cfg.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                            "up_proj", "down_proj"}
    assert (cfg.tokens.pad, cfg.tokens.bos, cfg.tokens.eos) == (0, 1, 2)


def test_openflamingo_9b_parameter_counts_on_meta():
    counts = count_by_part(build_flamingo(get_preset("openflamingo-9b-v1"), device="meta"))
    assert counts["perceiver"] == 63_019_008  # "≈63M"
    assert counts["xattn_attn"] == 42_008_584  # "attention only ≈42M"
    assert counts["xattn_attn"] + counts["xattn_ffn"] == 1_115_815_952  # "≈1.12B"
    assert counts["lm_lora"] == 159_907_840  # "≈160M"
    assert counts["lm_embeddings"] == 131_084_288  # 32003 * 4096
    assert counts["lm_embeddings"] + counts["lm_full"] == 6_738_440_192  # LLaMA-7B + 3 tokens
    assert counts["vision"] == 304_293_888  # ViT-L-14-336 image tower


def test_flamingo_1b_has_a_block_before_every_layer():
    cfg = get_preset("flamingo-1b")
    assert cfg.xattn_layers == list(range(22))
    model = build_flamingo(cfg, device="meta")
    assert len(model.gated_cross_attn_layers) == 22 and model.config.vision.num_patches == 256
    total = sum(count_by_part(model).values())
    # 304M vision + 63M perceiver + 22 blocks of ~36.7M (3.1M attention + 33.6M FFN at
    # width 2048) + a 1.1B LM: ~2.3B (OpenFlamingo-3B is larger through MPT-1B's 50k vocab)
    assert 2.2e9 < total < 2.5e9


def test_tiny_is_a_few_million_parameters():
    counts = count_by_part(build_flamingo(get_preset("tiny"), device="meta"))
    assert 3e6 < sum(counts.values()) < 6e6


def test_unknown_preset():
    with pytest.raises(ValueError, match="model preset: received 'huge'; allowed: tiny"):
        get_preset("huge")
