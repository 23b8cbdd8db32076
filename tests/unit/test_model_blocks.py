"""Blocks of the Flamingo model: shapes on a documented example, hand-worked masks, and the
cross-attention against a transcription of OpenFlamingo v1's code."""

from __future__ import annotations

import pytest
import torch

from pf_ray.model.config import CrossAttentionConfig, PerceiverConfig
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.perceiver import PerceiverResampler
from pf_ray.model.presets import get_preset
from pf_ray.model.xattn import (
    GatedCrossAttentionBlock,
    media_index,
    restrict_to_available,
    text_to_image_mask,
)

IMG = 9  # stands for the <image> token id in the mask examples




@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_flamingo(get_preset("tiny")).eval()


# ----------------------------------------------------------------------------- shapes


def test_shapes_of_every_block_on_the_documented_example(tiny):
    """The example in pf_ray/model/flamingo.py's docstring: b=2, T_img=2, t=12."""
    torch.manual_seed(1)
    b, t_img, t = 2, 2, 12
    images = torch.randn(b, t_img, 3, 64, 64)
    from pf_ray.model.vision import patch_tokens

    tokens = patch_tokens(tiny.vision_encoder, images)
    assert tokens.shape == (2, 2, 16, 64)  # v = (64 / 16) ** 2 patches of width 64
    media = tiny.perceiver(tokens)
    assert media.shape == (2, 2, 8, 64)  # 8 latents
    assert tiny.encode_images(images).shape == (2, 2, 8, 64)
    assert tiny.encode_images(images[0]).shape == (2, 8, 64)  # (n, C, H, W) works too
    ids = torch.randint(3, 1000, (b, t))
    ids[:, 4] = tiny.config.tokens.media
    ids[1, 9] = tiny.config.tokens.media
    index = media_index(ids == tiny.config.tokens.media, "next_image")
    assert index.shape == (2, 12)
    block = tiny.gated_cross_attn_layers["1"]
    hidden = torch.randn(b, t, 256)
    assert block(hidden, media, index).shape == (2, 12, 256)
    assert block.attn(hidden, media, index).shape == (2, 12, 256)
    out = tiny(ids, images)
    assert out.logits.shape == (2, 12, 1024)
    assert out.past_images.tolist() == [1, 2]
    assert sorted(tiny.gated_cross_attn_layers) == ["1", "3"]  # (i+1) % 2 == 0 of 4 layers


# ----------------------------------------------------------------------------- masks

# a <image> b c <image> d e, as in pf_ray/model/xattn.py
SEQ = torch.tensor([[1, IMG, 2, 3, IMG, 4, 5]])


def test_previous_image_mask_by_hand():
    index = media_index(SEQ == IMG, "previous_image")
    assert index.tolist() == [[0, 1, 1, 1, 2, 2, 2]]
    expected = torch.tensor([  # rows: tokens, columns: image 1, image 2
        [0, 0],  # a        (no image before it)
        [1, 0],  # <image>  its own image
        [1, 0],  # b
        [1, 0],  # c
        [0, 1],  # <image>
        [0, 1],  # d
        [0, 1],  # e
    ], dtype=torch.bool)
    assert torch.equal(text_to_image_mask(index, 2)[0], expected)


def test_next_image_mask_by_hand():
    index = media_index(SEQ == IMG, "next_image")
    assert index.tolist() == [[1, 1, 2, 2, 2, 0, 0]]
    expected = torch.tensor([
        [1, 0],  # a        waits for the first image
        [1, 0],  # <image>  its own image
        [0, 1],  # b        waits for the second image
        [0, 1],  # c
        [0, 1],  # <image>
        [0, 0],  # d        after the last image: nothing
        [0, 0],  # e
    ], dtype=torch.bool)
    assert torch.equal(text_to_image_mask(index, 2)[0], expected)


def test_masks_continue_from_a_cache():
    """Decode steps after the prompt above (2 images in the cache)."""
    step = torch.tensor([[7], [7]])
    past = torch.tensor([2, 0])
    assert media_index(step == IMG, "previous_image", past).tolist() == [[2], [0]]
    assert media_index(step == IMG, "next_image", past).tolist() == [[0], [0]]
    # chunked prefill gives the full sequence's answer in previous_image mode
    full = media_index(SEQ == IMG, "previous_image")
    first = media_index(SEQ[:, :3] == IMG, "previous_image")
    rest = media_index(SEQ[:, 3:] == IMG, "previous_image", torch.tensor([1]))
    assert torch.equal(torch.cat([first, rest], 1), full)


def test_left_padding_does_not_change_real_tokens_indices():
    padded = torch.tensor([[0, 0, 1, IMG, 2, 3, IMG, 4, 5]])
    for mode in ("next_image", "previous_image"):
        assert torch.equal(media_index(padded == IMG, mode)[:, 2:], media_index(SEQ == IMG, mode))


def test_absent_images_get_no_attention():
    index = torch.tensor([[1, 2, 3, 0], [1, 2, 2, 1]])
    mask = torch.tensor([[True, True], [True, False]])  # sample 1 has one real image
    assert restrict_to_available(index, mask, 2).tolist() == [[1, 2, 0, 0], [1, 0, 0, 1]]


# ----------------------------------------------------------------------------- against OpenFlamingo v1


def _of_v1_masked_cross_attention(attn, x, media, media_locations, attend_previous):
    """OpenFlamingo v1 MaskedCrossAttention.forward (only_attend_immediate_media=True),
    transcribed from einops to torch."""
    _, t_img, n = media.shape[:3]
    h = attn.heads
    x = attn.norm(x)
    q = attn.to_q(x)
    media = media.reshape(media.shape[0], t_img * n, -1)
    k, v = attn.to_kv(media).chunk(2, dim=-1)

    def split(z):
        return z.reshape(z.shape[0], z.shape[1], h, -1).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    q = q * attn.scale
    sim = q @ k.transpose(-1, -2)
    text_time = media_locations.cumsum(dim=-1)
    media_time = torch.arange(t_img) + 1
    if not attend_previous:
        text_time[~media_locations] += 1
        count = media_locations.sum(dim=1)[:, None].expand_as(text_time)
        text_time[text_time > count] = 0
    mask = torch.eq(text_time[:, None, :, None], media_time.repeat_interleave(n)[None, None, None, :])
    sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    a = sim.softmax(dim=-1)
    a = a.masked_fill((text_time == 0)[:, None, :, None], 0.0)
    out = (a @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    return attn.to_out(out)


@pytest.mark.parametrize("mode,attend_previous", [("next_image", False), ("previous_image", True)])
def test_cross_attention_matches_openflamingo_v1(mode, attend_previous):
    torch.manual_seed(2)
    block = GatedCrossAttentionBlock(32, 16, CrossAttentionConfig(heads=2, dim_head=8, ff_mult=2))
    x = torch.randn(2, 7, 32)
    media = torch.randn(2, 2, 3, 16)
    ids = torch.stack([SEQ[0], torch.tensor([1, 2, IMG, 3, 4, IMG, 5])])
    loc = ids == IMG
    ours = block.attn(x, media, media_index(loc, mode))
    ref = _of_v1_masked_cross_attention(block.attn, x, media, loc.clone(), attend_previous)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_gates_start_at_zero_and_block_is_identity():
    block = GatedCrossAttentionBlock(32, 16, CrossAttentionConfig(heads=2, dim_head=8))
    assert block.attn_gate.tolist() == [0.0] and block.ff_gate.tolist() == [0.0]
    x = torch.randn(1, 7, 32)
    assert torch.equal(block(x, torch.randn(1, 2, 3, 16), media_index(SEQ == IMG, "next_image")), x)


def test_block_without_ffn_has_no_ffn_parameters():
    block = GatedCrossAttentionBlock(32, 16, CrossAttentionConfig(heads=2, dim_head=8, ffn=False))
    assert sorted(n for n, _ in block.named_parameters()) == [
        "attn.norm.bias", "attn.norm.weight", "attn.to_kv.weight", "attn.to_out.weight",
        "attn.to_q.weight", "attn_gate"]


def test_perceiver_names_and_shapes_follow_openflamingo():
    p = PerceiverResampler(32, PerceiverConfig(depth=2, num_latents=4, heads=2, dim_head=8, ff_mult=2))
    names = {n for n, _ in p.named_parameters()}
    for key in ("latents", "layers.0.0.norm_media.weight", "layers.0.0.norm_latents.bias",
                "layers.1.0.to_q.weight", "layers.1.0.to_kv.weight", "layers.1.0.to_out.weight",
                "layers.0.1.0.weight", "layers.0.1.1.weight", "layers.0.1.3.weight", "norm.weight"):
        assert key in names
    assert p(torch.randn(3, 2, 5, 32)).shape == (3, 2, 4, 32)
    # no time embeddings: each image is resampled on its own
    x = torch.randn(1, 2, 5, 32)
    torch.testing.assert_close(p(x)[0, 1], p(x[:, 1:])[0, 0])
