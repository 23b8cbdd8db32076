"""The vision path gives the patch tokens the released perceivers were trained on: before
the tower's final LayerNorm (``ln_post``), as the open_clip of OpenFlamingo v1 did."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.model.vision import build_vision_encoder, patch_tokens


def _last_block(encoder: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip's own route to the last transformer block's patch tokens, before ln_post."""
    out = encoder.forward_intermediates(pixels, indices=1, output_fmt="NLC",
                                        intermediates_only=True, normalize_intermediates=False)
    return out["image_intermediates"][-1]


def test_openflamingo_9b_v1_vision_tokens_are_before_ln_post():
    """The real ViT-L-14-336 config (random weights, one image: ~15 s on 2 CPUs)."""
    cfg = get_preset("openflamingo-9b-v1").vision
    assert not cfg.ln_post_on_tokens
    torch.manual_seed(0)
    encoder = build_vision_encoder(cfg).encoder.eval()
    seen: dict[str, torch.Tensor] = {}
    encoder.transformer.register_forward_hook(lambda _m, _i, out: seen.update(trunk=out))
    encoder.register_forward_hook(lambda _m, _i, out: seen.update(pooled=out[0]))
    pixels = torch.randn(1, 1, 3, cfg.image_size, cfg.image_size)  # (b, T_img, C, H, W)
    with torch.no_grad():
        tokens = patch_tokens(encoder, pixels)  # one forward through ViT-L
    assert tokens.shape == (1, 1, 576, 1024)
    trunk = seen["trunk"][0]  # the transformer's output, (1 + v, D_v)
    torch.testing.assert_close(tokens[0, 0], trunk[1:], rtol=0, atol=0)
    with torch.no_grad():
        assert (tokens[0, 0] - encoder.ln_post(trunk[1:])).abs().max() > 0.1  # ln_post left out
        # the pooled embedding keeps ln_post (class token, then projection)
        torch.testing.assert_close(seen["pooled"][0], encoder.ln_post(trunk[0]) @ encoder.proj)


def test_tiny_vision_path_and_the_switch():
    config = get_preset("tiny")
    assert not config.vision.ln_post_on_tokens
    torch.manual_seed(0)
    model = build_flamingo(config).eval()
    pixels = torch.randn(2, 3, 3, 64, 64)
    flat = pixels.reshape(-1, 3, 64, 64)
    with torch.no_grad():
        tokens = patch_tokens(model.vision_encoder, pixels)  # (2, 3, 16, 64)
        expected = _last_block(model.vision_encoder, flat)
        torch.testing.assert_close(tokens.reshape(6, 16, 64), expected, rtol=0, atol=0)
        torch.testing.assert_close(model.encode_images(pixels),
                                   model.perceiver(expected.reshape(2, 3, 16, 64)))

        # the switch: ln_post on the tokens, as open_clip 3.x does by default
        newer = dataclasses.replace(config.vision, ln_post_on_tokens=True)
        torch.manual_seed(0)
        encoder = build_vision_encoder(newer).encoder.eval()
        encoder.load_state_dict(model.vision_encoder.state_dict())  # same keys either way
        torch.testing.assert_close(patch_tokens(encoder, flat),
                                   encoder.ln_post(_last_block(encoder, flat)))


def test_attention_pooled_towers_need_ln_post_on_tokens():
    # CoCa pools with attention, where open_clip ignores final_ln_after_pool
    cfg = dataclasses.replace(get_preset("tiny").vision, model_name="coca_ViT-B-32", width=768,
                              image_size=224, patch_size=32)
    with pytest.raises(ValueError, match="ln_post_on_tokens: true"):
        build_vision_encoder(cfg)
