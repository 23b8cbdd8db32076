"""Batched generation: equal to one-by-one, equal to uncached forwards, images encoded once."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.generate import GenerationConfig, encode_unique_images, generate
from pf_ray.model.presets import get_preset
from pf_ray.model.prompts import Turn, encode_chat
from pf_ray.model.tokenizer import build_tiny_tokenizer

MODES = ["next_image", "previous_image"]




@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _model(mode: str):
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = build_flamingo(cfg.replace(xattn=dataclasses.replace(cfg.xattn, mask=mode))).eval()
    with torch.no_grad():  # open the gates so images and cross-attention matter
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(0.5)
    return model


@pytest.fixture(scope="module", params=MODES)
def setup(request, tok):
    mode = request.param
    model = _model(mode)
    g = torch.Generator().manual_seed(1)
    imgs = [torch.randn(3, 64, 64, generator=g) for _ in range(3)]
    turns = [
        [Turn("What colour is the circle?", images=1)],
        [Turn("Hi", images=2)],
        [Turn("Describe the following image in detail, please, with every shape.", images=0)],
        [Turn("How many shapes?", "Three.", images=1), Turn("Which is largest?")],
    ]
    prompts = [encode_chat(tok, t, mode).input_ids for t in turns]
    images = [[imgs[0]], [imgs[1], imgs[0].clone()], [], [imgs[2]]]
    assert len({len(p) for p in prompts}) == 4  # mixed lengths: left padding in the batch
    return mode, model, prompts, images


def test_batched_greedy_equals_one_by_one(setup, tok):
    _, model, prompts, images = setup
    cfg = GenerationConfig(max_new_tokens=10)
    batched = generate(model, tok, prompts, images, cfg)
    single = [generate(model, tok, [p], [i], cfg)[0] for p, i in zip(prompts, images, strict=True)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert all(len(g.token_ids) == 10 and g.finish_reason == "length" for g in batched)
    assert len({tuple(g.token_ids) for g in batched}) > 1  # the prompts / images matter


def test_batched_greedy_equals_one_by_one_with_qwen2(tok):
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny-qwen2")).eval()
    with torch.no_grad():
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(1.0)
    g = torch.Generator().manual_seed(2)
    img = torch.randn(3, 64, 64, generator=g)
    prompts = [encode_chat(tok, [Turn(q, images=1)], "next_image").input_ids
               for q in ("What is this?", "Describe the image in detail, please.")]
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate(model, tok, prompts, [[img], [img]], cfg)
    single = [generate(model, tok, [p], [[img]], cfg)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_rows_leaving_the_batch_early_do_not_change_the_others(setup, tok):
    _, model, prompts, images = setup
    free = generate(model, tok, prompts, images, GenerationConfig(max_new_tokens=8))
    first = free[0].token_ids
    cut = next(j for j in range(1, 8) if first[j] not in first[:j])
    cfg = GenerationConfig(max_new_tokens=8, eos_token_ids=(first[cut],))  # sample 0 ends early
    batched = generate(model, tok, prompts, images, cfg)
    single = [generate(model, tok, [p], [i], cfg)[0] for p, i in zip(prompts, images, strict=True)]
    assert batched[0].finish_reason == "eos" and batched[0].token_ids == first[:cut]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in single]


def test_cached_decoding_equals_uncached_forward(setup, tok):
    mode, model, prompts, images = setup
    steps = 6
    gens = generate(model, tok, prompts, images, GenerationConfig(max_new_tokens=steps),
                    output_logits=True)
    # one uncached forward over prompt + generated tokens, left-padded, per mask mode
    seqs = [list(p) + g.token_ids[:-1] for p, g in zip(prompts, gens, strict=True)]
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), model.config.tokens.pad)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, length - len(s):] = torch.tensor(s)
        mask[i, length - len(s):] = 1
    media, image_mask, _, _ = encode_unique_images(model, images)
    with torch.no_grad():
        full = model(ids, media=media, image_mask=image_mask, attention_mask=mask,
                     position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    for i, (p, g) in enumerate(zip(prompts, gens, strict=True)):
        start = length - len(seqs[i]) + len(p) - 1  # logits after the prompt's last token
        torch.testing.assert_close(g.logits, full[i, start:start + steps], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,decode_index", [("next_image", 0), ("previous_image", 2)])
def test_decode_steps_see_the_image_of_their_mode(tok, mode, decode_index):
    """With two images in the prompt, cached decode steps see image 2 (previous_image) or
    no image (next_image), as the same tokens would in a full forward."""
    model = _model(mode)
    seen = []
    model.gated_cross_attn_layers["1"].register_forward_pre_hook(
        lambda m, args: seen.append(args[2].clone()))
    prompt = encode_chat(tok, [Turn("Look", images=2)], mode).input_ids
    g = torch.Generator().manual_seed(4)
    generate(model, tok, [prompt], [[torch.randn(3, 64, 64, generator=g) for _ in range(2)]],
             GenerationConfig(max_new_tokens=4))
    prefill, steps = seen[0], seen[1:]
    assert prefill.shape == (1, len(prompt)) and int(prefill.max()) == 2
    assert len(steps) == 3 and all(s.tolist() == [[decode_index]] for s in steps)


def test_beam_search_batched_equals_one_by_one(setup, tok):
    _, model, prompts, images = setup
    cfg = GenerationConfig(max_new_tokens=6, num_beams=3)
    batched = generate(model, tok, prompts, images, cfg)
    single = [generate(model, tok, [p], [i], cfg)[0] for p, i in zip(prompts, images, strict=True)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    for a, b in zip(batched, single, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_beam_search_scores_at_least_greedy(tok):
    model = _model("next_image")
    prompt = encode_chat(tok, [Turn("Hello there")], "next_image").input_ids
    cfg = GenerationConfig(max_new_tokens=5, eos_token_ids=(0,))  # <unk>: effectively no EOS
    greedy = generate(model, tok, [prompt], None, cfg, output_logits=True)[0]
    logp = sum(float(row.log_softmax(-1)[t]) for row, t in zip(greedy.logits, greedy.token_ids,
                                                               strict=True))
    beam = generate(model, tok, [prompt], None, dataclasses.replace(cfg, num_beams=4))[0]
    assert len(beam.token_ids) == 5 and beam.score >= logp / 5 - 1e-5


def test_sampling_is_seeded_and_top_k_1_is_greedy(setup, tok):
    _, model, prompts, images = setup
    cfg = GenerationConfig(max_new_tokens=6, do_sample=True, top_k=20, top_p=0.9, temperature=0.8,
                           seed=3)
    a = generate(model, tok, prompts, images, cfg)
    b = generate(model, tok, prompts, images, cfg)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    greedy = generate(model, tok, prompts, images, GenerationConfig(max_new_tokens=6))
    k1 = generate(model, tok, prompts, images, dataclasses.replace(cfg, top_k=1))
    assert [g.token_ids for g in k1] == [g.token_ids for g in greedy]


def test_stop_strings_cut_the_text(setup, tok):
    _, model, prompts, images = setup
    free = generate(model, tok, prompts[:1], images[:1], GenerationConfig(max_new_tokens=10))[0]
    stop = tok.decode(free.token_ids[3:5])
    assert stop.strip()
    out = generate(model, tok, prompts[:1], images[:1],
                   GenerationConfig(max_new_tokens=10, stop_strings=(stop,)))[0]
    assert out.finish_reason == "stop"
    assert out.text == free.text[:free.text.find(stop)]
    assert out.token_ids == free.token_ids[:len(out.token_ids)] and len(out.token_ids) <= 5


def test_images_are_never_generated_and_counts_are_checked(setup, tok):
    _, model, prompts, images = setup
    gens = generate(model, tok, prompts, images, GenerationConfig(max_new_tokens=10))
    assert all(model.config.tokens.media not in g.token_ids for g in gens)
    with pytest.raises(ValueError, match="prompt 0: 1 <image> token\\(s\\) but 0 image"):
        generate(model, tok, prompts[:1], [[]])


def test_each_unique_image_is_encoded_once(tok):
    model = _model("next_image")
    calls = []
    model.vision_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    g = torch.Generator().manual_seed(0)
    uniques = [torch.randn(3, 64, 64, generator=g) for _ in range(4)]
    images = [[uniques[i % 4].clone()] for i in range(32)]  # equal content, distinct objects
    media, mask, counts, n_unique = encode_unique_images(model, images)
    assert n_unique == 4 and calls == [4]
    assert media.shape == (32, 1, 8, 64) and bool(mask.all()) and counts.tolist() == [1] * 32
    torch.testing.assert_close(media[5], media[1])
    # PIL images are hashed by their pixels too
    pil = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    _, _, _, n = encode_unique_images(model, [[pil[0]], [Image.new("RGB", (64, 64), "red")], [pil[1]]])
    assert n == 2
