"""generate_rows (the server's batched generator): per-row configs and step events."""

from __future__ import annotations

import pytest
import torch

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.generate import GenerationConfig, generate, generate_rows
from pf_ray.model.presets import get_preset
from pf_ray.model.prompts import Turn, encode_chat
from pf_ray.model.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny")).eval()
    with torch.no_grad():  # open the gates so images matter
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(0.5)
    tok = build_tiny_tokenizer()
    g = torch.Generator().manual_seed(1)
    imgs = [torch.randn(3, 64, 64, generator=g) for _ in range(2)]
    prompts = [encode_chat(tok, [Turn("What colour is it?", images=1)], "next_image").input_ids,
               encode_chat(tok, [Turn("Hi")], "next_image").input_ids,
               encode_chat(tok, [Turn("Two of them", images=2)], "next_image").input_ids]
    images = [[imgs[0]], [], [imgs[1], imgs[0]]]
    yield model, tok, prompts, images
    torch.set_num_threads(threads)


def test_same_config_equals_generate_and_events_match(setup):
    model, tok, prompts, images = setup
    cfg = GenerationConfig(max_new_tokens=9)
    events = []
    rows = generate_rows(model, tok, prompts, images, [cfg] * 3, on_step=events.append)
    ref = generate(model, tok, prompts, images, cfg)
    assert [r.token_ids for r in rows] == [g.token_ids for g in ref]
    assert [r.finish_reason for r in rows] == [g.finish_reason for g in ref]
    # the events replay every row's tokens in order and end each row exactly once
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    ends: dict[int, str] = {}
    for step in events:
        for item, token, reason in step:
            assert item not in ends
            if token is not None:
                seen[item].append(token)
            if reason is not None:
                ends[item] = reason
    assert [seen[i] for i in range(3)] == [r.token_ids for r in rows]
    assert ends == {i: r.finish_reason for i, r in enumerate(rows)}


def test_each_row_decodes_with_its_own_config(setup):
    model, tok, prompts, images = setup
    configs = [GenerationConfig(max_new_tokens=3),
               GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.8,
                                seed=7),
               GenerationConfig(max_new_tokens=6, stop_strings=("e",))]
    rows = generate_rows(model, tok, prompts, images, configs)
    for i, cfg in enumerate(configs):  # as if each request had been alone
        alone = generate(model, tok, [prompts[i]], [images[i]], cfg)[0]
        assert rows[i].token_ids == alone.token_ids, i
        assert rows[i].finish_reason == alone.finish_reason
    assert len(rows[0].token_ids) <= 3
    # a seeded row does not depend on what else is in the batch
    again = generate_rows(model, tok, [prompts[1], prompts[0]], [images[1], images[0]],
                          [configs[1], configs[0]])
    assert again[0].token_ids == rows[1].token_ids


def test_refuses_beams_and_mismatched_lengths(setup):
    model, tok, prompts, images = setup
    with pytest.raises(ValueError, match="num_beams"):
        generate_rows(model, tok, prompts, images, [GenerationConfig(num_beams=2)] * 3)
    with pytest.raises(ValueError, match="generation configs"):
        generate_rows(model, tok, prompts, images, [GenerationConfig()])
