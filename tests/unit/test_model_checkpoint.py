"""Released key layouts load strictly; model folders round-trip; the converter."""

from __future__ import annotations

import json

import pytest
import torch

from pf_ray.faults import ModelUnavailable, is_infrastructure_fault
from pf_ray.model import convert
from pf_ray.model.checkpoint import (
    LAYOUTS,
    load_folder_tokenizer,
    load_pretrained,
    load_released,
    load_state_dict,
    map_released_key,
    released_state_dict,
    save_pretrained,
)
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.model.tokenizer import build_tiny_tokenizer

# --- the released checkpoints' key names, written out for the tiny dims ------------------
# perceiver D 64, depth 2, 8 latents, 4 x 16 heads, ff x2; xattn D 256, D_v 64, 4 x 32 heads,
# ff x2, blocks before layers 1 and 3; LLaMA 4 layers, width 256, MLP 512, vocab 1024; LoRA r 8




def _perceiver() -> dict[str, tuple[int, ...]]:
    keys = {"perceiver.latents": (8, 64), "perceiver.norm.weight": (64,), "perceiver.norm.bias": (64,)}
    for i in range(2):
        p = f"perceiver.layers.{i}."
        keys.update({
            p + "0.norm_media.weight": (64,), p + "0.norm_media.bias": (64,),
            p + "0.norm_latents.weight": (64,), p + "0.norm_latents.bias": (64,),
            p + "0.to_q.weight": (64, 64), p + "0.to_kv.weight": (128, 64),
            p + "0.to_out.weight": (64, 64),
            p + "1.0.weight": (64,), p + "1.0.bias": (64,), p + "1.1.weight": (128, 64),
            p + "1.3.weight": (64, 128)})
    return keys


def _xattn(prefix: str = "lang_encoder.gated_cross_attn_layers.{i}.") -> dict[str, tuple[int, ...]]:
    keys = {}
    for i in (1, 3):
        p = prefix.format(i=i)
        keys.update({
            p + "attn.norm.weight": (256,), p + "attn.norm.bias": (256,),
            p + "attn.to_q.weight": (128, 256), p + "attn.to_kv.weight": (256, 64),
            p + "attn.to_out.weight": (256, 128), p + "attn_gate": (1,),
            p + "ff.0.weight": (256,), p + "ff.0.bias": (256,), p + "ff.1.weight": (512, 256),
            p + "ff.3.weight": (256, 512), p + "ff_gate": (1,)})
    return keys


LINEARS = {"self_attn.q_proj": (256, 256), "self_attn.k_proj": (256, 256),
           "self_attn.v_proj": (256, 256), "self_attn.o_proj": (256, 256),
           "mlp.gate_proj": (256, 512), "mlp.up_proj": (256, 512), "mlp.down_proj": (512, 256)}


def _lora() -> dict[str, tuple[int, ...]]:
    keys = {}
    for i in range(4):
        for mod, (fan_in, fan_out) in LINEARS.items():
            p = f"lang_encoder.model.layers.{i}.decoder_layer.{mod}."
            keys[p + "lora_A.default.weight"] = (8, fan_in)
            keys[p + "lora_B.default.weight"] = (fan_out, 8)
    return keys


def _embeddings() -> dict[str, tuple[int, ...]]:
    return {"lang_encoder.model.embed_tokens.weight": (1024, 256)}


def _decoder_base(prefix: str = "lang_encoder.model.layers.{i}.decoder_layer.") -> dict[str, tuple[int, ...]]:
    keys = {}
    for i in range(4):
        p = prefix.format(i=i)
        for mod, (fan_in, fan_out) in LINEARS.items():
            keys[p + mod + ".weight"] = (fan_out, fan_in)
        keys[p + "input_layernorm.weight"] = (256,)
        keys[p + "post_attention_layernorm.weight"] = (256,)
    return keys


def _random(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # released files are fp16
    return {k: torch.randn(s, generator=g).half() for k, s in sorted(shapes.items())}


def clever_state() -> dict[str, torch.Tensor]:
    return _random({**_perceiver(), **_xattn(), **_lora(), **_embeddings()})


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_flamingo(get_preset("tiny")).eval()


def _inputs(model):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 1000, (2, 9), generator=g)
    ids[:, 5] = model.config.tokens.media
    return ids, torch.randn(2, 1, 3, 64, 64, generator=g)


# ----------------------------------------------------------------------------- released layouts


def test_key_mapping_of_the_released_layouts():
    assert map_released_key("lang_encoder.gated_cross_attn_layers.31.attn.to_kv.weight") == \
        "gated_cross_attn_layers.31.attn.to_kv.weight"
    assert map_released_key(
        "lang_encoder.model.layers.7.decoder_layer.self_attn.q_proj.lora_A.default.weight") == \
        "lang_encoder.model.layers.7.self_attn.q_proj.lora_A.default.weight"
    assert map_released_key("lang_encoder.model.layers.3.gated_cross_attn_layer.ff_gate") == \
        "gated_cross_attn_layers.3.ff_gate"
    assert map_released_key("lang_encoder.old_decoder_blocks.2.mlp.up_proj.weight") == \
        "lang_encoder.model.layers.2.mlp.up_proj.weight"
    assert map_released_key("lang_encoder.model.embed_tokens.weight") == \
        "lang_encoder.model.embed_tokens.weight"
    assert map_released_key("perceiver.layers.5.1.3.weight") == "perceiver.layers.5.1.3.weight"
    assert map_released_key(
        "lang_encoder.model.layers.0.decoder_layer.self_attn.rotary_emb.inv_freq") is None


@pytest.mark.parametrize("layout,shapes", [
    ("clever_flamingo", lambda: {**_perceiver(), **_xattn(), **_lora(), **_embeddings()}),
    ("polite_flamingo", lambda: {**_lora(), **_embeddings()}),
    ("openflamingo", lambda: {**_perceiver(), **_xattn(), **_embeddings()}),
])
def test_synthetic_released_files_load_strictly(model, tmp_path, layout, shapes):
    state = _random(shapes())
    path = tmp_path / f"{layout}.pt"
    torch.save(state, path)
    report = load_released(model, path, layout)
    assert report.problems == [] and len(report.loaded) == len(state)
    params = dict(model.named_parameters())
    for key, value in state.items():
        ours = map_released_key(key)
        assert torch.equal(params[ours], value.float()), key


def test_openflamingo_aliases_and_base_weights(model, tmp_path):
    """v1 state dicts repeat shared modules under a second name, and may hold LM weights."""
    state = _random({**_perceiver(), **_xattn(), **_embeddings(), **_decoder_base()})
    for key, value in list(state.items()):
        if key.startswith("lang_encoder.gated_cross_attn_layers."):
            i, rest = key.split(".", 3)[2:]
            state[f"lang_encoder.model.layers.{i}.gated_cross_attn_layer.{rest}"] = value.clone()
        if ".decoder_layer." in key:
            i, rest = key.removeprefix("lang_encoder.model.layers.").split(".decoder_layer.")
            state[f"lang_encoder.old_decoder_blocks.{i}.{rest}"] = value.clone()
    state["lang_encoder.model.layers.0.decoder_layer.self_attn.rotary_emb.inv_freq"] = torch.ones(32)
    torch.save({"model_state_dict": state}, tmp_path / "checkpoint.pt")
    report = load_released(model, tmp_path / "checkpoint.pt", "openflamingo")
    assert report.problems == [] and len(report.ignored) == 1
    q = model.lang_encoder.model.layers[2].self_attn.q_proj  # LoRA-wrapped: base_layer.weight
    assert torch.equal(q.base_layer.weight,
                       state["lang_encoder.model.layers.2.decoder_layer.self_attn.q_proj.weight"].float())
    # conflicting aliases are an error
    state["lang_encoder.model.layers.1.gated_cross_attn_layer.attn_gate"] = torch.ones(1).half()
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="conflicting aliases.*attn_gate"):
        load_released(model, tmp_path / "bad.pt", "openflamingo")


def test_a_renamed_key_fails_with_its_name(model, tmp_path):
    state = clever_state()
    good = "lang_encoder.gated_cross_attn_layers.3.attn.to_q.weight"
    state["lang_encoder.gated_cross_attn_layers.3.attn.to_query.weight"] = state.pop(good)
    torch.save(state, tmp_path / "clever.pt")
    before = model.perceiver.latents.clone()
    with pytest.raises(KeyError) as info:
        load_released(model, tmp_path / "clever.pt", "clever_flamingo")
    text = str(info.value)
    assert "unexpected key 'lang_encoder.gated_cross_attn_layers.3.attn.to_query.weight'" in text
    assert "missing key 'gated_cross_attn_layers.3.attn.to_q.weight'" in text
    assert torch.equal(model.perceiver.latents, before)  # nothing loaded on failure
    # the caller may opt out: everything else loads, the report still names the key
    report = load_released(model, tmp_path / "clever.pt", "clever_flamingo", strict=False)
    assert len(report.problems) == 2 and len(report.loaded) == len(state) - 1
    assert torch.equal(model.perceiver.latents, state["perceiver.latents"].float())


def test_shape_mismatch_and_parts_outside_the_layout_fail(model, tmp_path):
    state = _random({**_lora(), **_embeddings()})
    state["lang_encoder.model.embed_tokens.weight"] = torch.zeros(1000, 256)
    state["perceiver.latents"] = torch.zeros(8, 64)  # polite_flamingo holds no perceiver
    torch.save(state, tmp_path / "polite.pt")
    with pytest.raises(KeyError) as info:
        load_released(model, tmp_path / "polite.pt", "polite_flamingo")
    text = str(info.value)
    assert "lang_encoder.model.embed_tokens.weight: file (1000, 256), model (1024, 256)" in text
    assert "perceiver.latents (part perceiver is not in this layout)" in text
    assert set(LAYOUTS) == {"openflamingo", "polite_flamingo", "clever_flamingo", "full"}


def test_released_files_are_read_with_weights_only(tmp_path):
    torch.save({"x": torch.zeros(1), "y": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_released(build_flamingo(get_preset("tiny"), device="meta"), tmp_path / "evil.pt",
                      "polite_flamingo")


class _Evil:
    pass


def test_released_state_dict_round_trip(model):
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    parts = ["perceiver", "xattn_attn", "xattn_ffn", "lm_lora", "lm_embeddings"]
    state = released_state_dict(model, parts)
    assert set(state) == set(_random({**_perceiver(), **_xattn(), **_lora(), **_embeddings()}))
    other = build_flamingo(get_preset("tiny"))
    load_state_dict(other, state, layout=LAYOUTS["clever_flamingo"])
    for name, p in other.named_parameters():
        if "perceiver" in name or "gated" in name or "lora_" in name:
            assert torch.equal(p, dict(model.named_parameters())[name]), name


# ----------------------------------------------------------------------------- model folders


def _perturb(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.endswith("_gate"):
                p.copy_(torch.randn_like(p) * 0.3)


def test_save_load_gives_identical_outputs_with_lora(model, tmp_path):
    _perturb(model)
    tok = build_tiny_tokenizer()
    folder = save_pretrained(model, tmp_path / "m", tokenizer=tok)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["adapter", "config.json", "model.safetensors", "tokenizer"]
    assert sorted(p.name for p in (folder / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["name"] == "tiny"
    loaded = load_pretrained(folder)
    ids, images = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, images).logits, model(ids, images).logits,
                                   rtol=0, atol=0)
    assert load_folder_tokenizer(folder).get_vocab() == tok.get_vocab()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated HF helper
def test_saved_adapter_is_a_peft_adapter(model, tmp_path):
    """model.safetensors holds the plain HF LM keys; adapter/ loads with peft itself."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    _perturb(model)
    folder = save_pretrained(model, tmp_path / "m")
    hf = dict(model.config.lm.hf_config)
    bare = AutoModelForCausalLM.from_config(AutoConfig.for_model(hf.pop("model_type"), **hf))
    base = {k.removeprefix("lang_encoder."): v for k, v in load_file(folder / "model.safetensors").items()
            if k.startswith("lang_encoder.")}
    bare.load_state_dict(base, strict=True)
    peft_lm = PeftModel.from_pretrained(bare, str(folder / "adapter")).eval()
    ids = torch.randint(3, 1000, (1, 7))
    with torch.no_grad():
        ours = model.lang_encoder(input_ids=ids).logits  # no media: the LM with LoRA
        theirs = peft_lm(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_save_load_without_lora_has_no_adapter(tmp_path):
    torch.manual_seed(0)
    plain = build_flamingo(get_preset("tiny-qwen2").replace(lora=None)).eval()
    _perturb(plain)
    folder = save_pretrained(plain, tmp_path / "m")
    assert not (folder / "adapter").exists()
    ids, images = _inputs(plain)
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(folder)(ids, images).logits,
                                   plain(ids, images).logits, rtol=0, atol=0)


def test_folder_with_a_missing_tensor_fails_strictly(model, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_pretrained(model, tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    del state["perceiver.norm.bias"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(KeyError, match="missing key 'perceiver.norm.bias'") as info:
        load_pretrained(folder)
    assert isinstance(info.value, ModelUnavailable)  # a step fails its unit, no row rejects


@pytest.mark.parametrize("keep", [0.5, 0.0001, 0.0])
def test_truncated_weights_are_model_unavailable(tmp_path, keep):
    """A cut ``model.safetensors`` (an interrupted copy) is an infrastructure fault, never
    a per-row ``exception``; and so is a folder whose config is missing."""
    torch.manual_seed(0)
    plain = build_flamingo(get_preset("tiny-qwen2").replace(lora=None)).eval()
    folder = save_pretrained(plain, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelUnavailable, match="model.safetensors: cannot be loaded "
                                               r"\(SafetensorError: .*truncated or corrupt"):
        load_pretrained(folder)
    assert is_infrastructure_fault(ModelUnavailable("x"))
    (folder / "config.json").unlink()
    with pytest.raises(ModelUnavailable, match="config.json cannot be read"):
        load_pretrained(folder)


# ----------------------------------------------------------------------------- converter


def test_converter_writes_a_folder_from_released_files(model, tmp_path, capsys):
    of = _random({**_perceiver(), **_xattn(), **_embeddings()}, seed=1)
    clever = clever_state()
    torch.save(of, tmp_path / "checkpoint.pt")
    torch.save(clever, tmp_path / "clever_flamingo.pt")
    out = tmp_path / "converted"
    rc = convert.main(["--preset", "tiny", "--out", str(out),
                       "--load", f"openflamingo={tmp_path / 'checkpoint.pt'}",
                       "--load", f"clever_flamingo={tmp_path / 'clever_flamingo.pt'}"])
    assert rc == 0, capsys.readouterr().err
    converted = load_pretrained(out)
    # the same files loaded by hand into a fresh model of the same base
    reference = build_flamingo(get_preset("tiny"))
    reference.load_state_dict(converted.state_dict())  # base LM / vision weights are random
    load_released(reference, tmp_path / "checkpoint.pt", "openflamingo")
    load_released(reference, tmp_path / "clever_flamingo.pt", "clever_flamingo")
    ids, images = _inputs(reference)
    with torch.no_grad():
        torch.testing.assert_close(converted(ids, images).logits,
                                   reference.eval()(ids, images).logits, rtol=0, atol=0)
    assert torch.equal(converted.perceiver.latents, clever["perceiver.latents"].float())


def test_converter_reports_a_bad_key_and_fails(tmp_path, capsys):
    state = _random({**_lora(), **_embeddings()})
    state["lang_encoder.model.layers.0.decoder_layer.self_attn.q_proj.lora_C.default.weight"] = \
        torch.zeros(8, 256)
    torch.save(state, tmp_path / "polite.pt")
    rc = convert.main(["--preset", "tiny", "--out", str(tmp_path / "o"),
                       "--load", f"polite_flamingo={tmp_path / 'polite.pt'}"])
    assert rc == 2
    assert "q_proj.lora_C.default.weight" in capsys.readouterr().err
    assert convert.main(["--preset", "tiny", "--out", str(tmp_path / "o"),
                         "--load", "nonsense=x.pt"]) == 2


def _guanaco_style_adapter(folder, **overrides):
    """A peft adapter folder as guanaco-7b ships it (old peft: adapter_model.bin), for the tiny
    LM: r 4, alpha 32, dropout 0.05 on q/v only (the tiny preset: r 8, alpha 16, dropout 0,
    all seven linears)."""
    folder.mkdir()
    config = {"base_model_name_or_path": "huggyllama/llama-7b", "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
              "lora_alpha": 32, "lora_dropout": 0.05, "modules_to_save": None,
              "peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"],
              "task_type": "CAUSAL_LM", **overrides}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(5)
    state = {}
    for i in range(4):
        for mod, (fan_in, fan_out) in LINEARS.items():
            if mod.split(".")[1] in config["target_modules"]:
                p = f"base_model.model.model.layers.{i}.{mod}."
                state[p + "lora_A.weight"] = torch.randn(config["r"], fan_in, generator=g)
                state[p + "lora_B.weight"] = torch.randn(fan_out, config["r"], generator=g)
    torch.save(state, folder / "adapter_model.bin")
    return state


def test_converter_adopts_the_lora_init_adapters_settings(tmp_path, capsys):
    state = _guanaco_style_adapter(tmp_path / "guanaco")
    out = tmp_path / "converted"
    rc = convert.main(["--preset", "tiny", "--out", str(out), "--lora-init",
                       str(tmp_path / "guanaco")])
    err = capsys.readouterr().err
    assert rc == 0, err
    for field in ("r: 8 -> 4", "lora_alpha: 16 -> 32", "lora_dropout: 0.0 -> 0.05",
                  "target_modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', "
                  "'up_proj', 'v_proj'] -> ['q_proj', 'v_proj']"):
        assert field in err
    converted = load_pretrained(out)
    lora = converted.config.lora
    assert (lora.r, lora.alpha, lora.dropout, set(lora.target_modules)) == (
        4, 32, 0.05, {"q_proj", "v_proj"})
    q = converted.lang_encoder.model.layers[2].self_attn.q_proj
    assert q.scaling["default"] == 32 / 4  # the adapter's scaling, as PeftModel.from_pretrained
    assert torch.equal(q.lora_A["default"].weight,
                       state["base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"])
    assert not hasattr(converted.lang_encoder.model.layers[0].self_attn.k_proj, "lora_A")


def test_converter_keeps_matching_lora_settings_quietly_and_refuses_unknown_options(
        tmp_path, capsys):
    _guanaco_style_adapter(tmp_path / "same", r=8, lora_alpha=16, lora_dropout=0.0,
                           target_modules=["q_proj", "v_proj", "k_proj", "o_proj",
                                           "gate_proj", "up_proj", "down_proj"])
    rc = convert.main(["--preset", "tiny", "--out", str(tmp_path / "o"), "--lora-init",
                       str(tmp_path / "same")])
    assert rc == 0 and "LoRA settings" not in capsys.readouterr().err
    _guanaco_style_adapter(tmp_path / "rslora", use_rslora=True)
    assert convert.main(["--preset", "tiny", "--out", str(tmp_path / "o2"), "--lora-init",
                         str(tmp_path / "rslora")]) == 2
    assert "unsupported LoRA options {'use_rslora': True}" in capsys.readouterr().err


def test_converter_parser_is_light_and_in_step():
    import subprocess
    import sys

    from pf_ray.model.config import TOKENIZER_MODES
    from pf_ray.model.presets import PRESETS

    assert set(convert.LAYOUT_NAMES) == set(LAYOUTS) and set(convert.PRESET_NAMES) == set(PRESETS)
    assert convert.TOKENIZER_MODE_NAMES == TOKENIZER_MODES
    code = ("import sys, argparse; import pf_ray.model.convert as c; "
            "c.build_parser(argparse.ArgumentParser()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
