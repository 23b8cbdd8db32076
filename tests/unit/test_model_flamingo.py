"""The assembled model: a fresh model is its language model, media is a forward argument,
two LM families, LoRA stays in the LM, config errors."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from pf_ray.model.checkpoint import canonical_name
from pf_ray.model.config import FlamingoConfig, ModelConfigError
from pf_ray.model.flamingo import build_flamingo, find_decoder_layers
from pf_ray.model.lora import is_lora_name
from pf_ray.model.presets import get_preset


def _ids(model, b=2, t=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (b, t), generator=g)
    ids[:, 2] = model.config.tokens.media
    ids[0, 6] = model.config.tokens.media
    return ids


def _bare_lm(model):
    """A fresh HF model (no hooks, no LoRA) with the Flamingo LM's base weights."""
    hf = dict(model.config.lm.hf_config)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(hf.pop("model_type"), **hf))
    state = {canonical_name(k.removeprefix("lang_encoder.")): v
             for k, v in model.state_dict().items()
             if k.startswith("lang_encoder.") and not is_lora_name(k)}
    lm.load_state_dict(state, strict=True)
    return lm.eval()


def _open_gates(model, value=0.7):
    with torch.no_grad():
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(value)
            if block.ff_gate is not None:
                block.ff_gate.fill_(value / 2)


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen2"])
def test_fresh_model_equals_its_bare_language_model(preset):
    torch.manual_seed(0)
    model = build_flamingo(get_preset(preset)).eval()
    assert model.config.lm.model_type == ("llama" if preset == "tiny" else "qwen2")
    ids = _ids(model)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on sample 1
    images = torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        ours = model(ids, images, attention_mask=mask).logits
        bare = _bare_lm(model)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, bare, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["next_image", "previous_image"])
def test_open_gates_change_outputs_only_where_images_are_seen(mode):
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg = cfg.replace(xattn=dataclasses.replace(cfg.xattn, mask=mode, ffn=False))
    model = build_flamingo(cfg).eval()
    _open_gates(model)
    ids = torch.tensor([[5, 6, model.config.tokens.media, 7, 8]])
    with torch.no_grad():
        a = model(ids, torch.randn(1, 1, 3, 64, 64)).logits[0]
        b = model(ids, torch.randn(1, 1, 3, 64, 64)).logits[0]
    diff = (a - b).abs().amax(-1)
    if mode == "next_image":  # the tokens before the image describe it: they see it
        assert bool((diff[:3] > 1e-4).all())
    else:  # tokens before the image see nothing (and, causally, nothing that saw it)
        assert diff[:2].max() == 0 and bool((diff[2:] > 1e-4).all())


def test_media_is_a_forward_argument_not_layer_state():
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny")).eval()
    _open_gates(model)
    ids = _ids(model)
    img_a, img_b = torch.randn(2, 2, 3, 64, 64), torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        fresh_b = copy.deepcopy(model)(ids, img_b).logits
        model(ids, img_a)
        after_a = model(ids, img_b).logits
        lm_direct = model.lang_encoder(input_ids=ids).logits
        bare = _bare_lm(model)(input_ids=ids).logits
    torch.testing.assert_close(after_a, fresh_b, rtol=0, atol=1e-6)
    # calling the LM directly after a Flamingo forward: no media left anywhere
    torch.testing.assert_close(lm_direct, bare, rtol=0, atol=1e-5)
    for layer in model.decoder_layers:
        assert not any(isinstance(v, torch.Tensor) for v in vars(layer).values())


def test_zero_gates_still_receive_gradients():
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny"))
    ids = _ids(model)
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, torch.randn(2, 2, 3, 64, 64), labels=labels)
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    block = model.gated_cross_attn_layers["1"]
    assert block.attn_gate.grad.abs().item() > 0 and block.ff_gate.grad.abs().item() > 0
    assert model.perceiver.latents.grad.abs().max() == 0  # behind a zero gate
    assert all(p.grad is None for p in model.vision_encoder.parameters())  # frozen


def test_text_only_batch_runs_without_images():
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny")).eval()
    _open_gates(model)
    ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape == (2, 6, 1024) and out.past_images.tolist() == [0, 0]


def test_lora_is_in_the_language_model_only():
    model = build_flamingo(get_preset("tiny"), device="meta")
    lora = [n for n, _ in model.named_parameters() if is_lora_name(n)]
    assert lora and all(n.startswith("lang_encoder.model.layers.") for n in lora)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any(isinstance(m, nn.Linear) and hasattr(m, "lora_A")
                   for m in model.gated_cross_attn_layers.modules())


def test_decoder_layers_are_found_for_llama_and_qwen2_only_by_path():
    for preset, n in (("tiny", 4), ("tiny-qwen2", 4)):
        model = build_flamingo(get_preset(preset), device="meta")
        path, layers = find_decoder_layers(model.lang_encoder)
        assert path == "model.layers" and len(layers) == n
    with pytest.raises(ValueError, match="cannot find the decoder layers of Linear"):
        find_decoder_layers(nn.Linear(2, 2))


def test_lm_parameter_names_are_the_hf_names():
    model = build_flamingo(get_preset("tiny").replace(lora=None), device="meta")
    hf = dict(model.config.lm.hf_config)
    with torch.device("meta"):
        bare = AutoModelForCausalLM.from_config(AutoConfig.for_model(hf.pop("model_type"), **hf))
    ours = {n.removeprefix("lang_encoder.") for n, _ in model.named_parameters()
            if n.startswith("lang_encoder.")}
    assert ours == {n for n, _ in bare.named_parameters()}


def test_config_round_trip_and_errors_name_every_key():
    cfg = get_preset("tiny")
    assert FlamingoConfig.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["xattn"]["mask"] = "sideways"
    bad["perceiver"]["depht"] = 3
    bad["vision"]["width"] = "wide"
    with pytest.raises(ModelConfigError) as info:
        FlamingoConfig.from_dict(bad)
    text = str(info.value)
    assert "xattn.mask: received 'sideways'" in text
    assert "perceiver.depht: unknown key" in text and "allowed keys: depth" in text
    assert "vision.width: received 'wide'" in text
    with pytest.raises(ModelConfigError, match="tokens.media: received 5000"):
        build_flamingo(dataclasses.replace(cfg, tokens=dataclasses.replace(cfg.tokens, media=5000)),
                       device="meta")
