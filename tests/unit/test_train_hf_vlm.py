"""Training ``hf_vlm`` models without Ray: the spec, trainable sets per stage, examples and
their batches, the export (reloaded by load_vlm to the same greedy tokens) and a next
stage starting from an export. Tiny Idefics3 and tiny LLaVA built offline."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from pf_ray.config import SpecError, parse_spec

MODELS = ("tiny-idefics3", "tiny-llava")
LM_LAYERS = {"tiny-idefics3": "model.text_model.layers.",
             "tiny-llava": "model.language_model.layers."}
EMBEDDINGS = {"tiny-idefics3": "model.text_model.embed_tokens.weight",
              "tiny-llava": "model.language_model.embed_tokens.weight"}
CONNECTOR = {"tiny-idefics3": "model.connector.", "tiny-llava": "model.multi_modal_projector."}
VISION = {"tiny-idefics3": "model.vision_model.", "tiny-llava": "model.vision_tower."}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """Tiny models run fastest on one thread (on a busy 2-core machine two wait on each
    other); restored afterwards, as tests/unit/conftest.py does for test_model_*."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec_of(tmp: Path, **extra: Any):  # type: ignore[no-untyped-def]
    base = {"kind": "train", "stage": "rewriter", "model": "tiny-idefics3",
            "data": [{"path": str(tmp / "data")}], "storage_path": str(tmp / "runs"),
            "run_name": "r", "max_length": 256}
    return parse_spec(base | extra)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def pair(i: int, images: int = 1) -> dict[str, Any]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    extra = [{"image": None, "image_bytes": png(colours[(i + k) % 4])}
             for k in range(1, images)]
    return {"id": f"p{i}", "instruction": "Describe the image.", "distorted": "a thing",
            "original": f"A square of colour {i}.", "image": None,
            "image_bytes": png(colours[i % 4]) if images else None,
            "extra_images": extra or None}


def chat(i: int, image: bool) -> dict[str, Any]:
    return {"id": f"c{i}", "conversations": [
        {"role": "user", "content": "What colour is it?"},
        {"role": "assistant", "content": f"It is colour {i}."}],
        "image": None, "image_bytes": png((i * 60, 0, 0)) if image else None,
        "extra_images": None}


def as_batch(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def built(spec):  # type: ignore[no-untyped-def]
    from pf_ray.train.hf_build import build_hf_for_training

    torch.manual_seed(spec.seed)
    return build_hf_for_training(spec, device=torch.device("cpu"), sharded=False, rank=0,
                                 world=1, bf16=False).model


def train(spec, rows: list[dict[str, Any]], steps: int = 3,  # type: ignore[no-untyped-def]
          bf16: bool = False):
    """The spec's model after ``steps`` AdamW steps on one batch of ``rows`` (no Ray;
    ``bf16``: autocast, as the loop computes without FSDP)."""
    from pf_ray.train.examples import example_builder
    from pf_ray.train.hf_data import collate_hf

    model = built(spec)
    model.train()
    builder = example_builder(spec)
    batch = collate_hf(builder(as_batch(rows)), builder, torch.device("cpu"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


# --- the spec --------------------------------------------------------------------------


def test_spec_model_mapping_family_and_lora_defaults(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, model={"family": "hf_vlm", "path": "/models/smolvlm"})
    assert (spec.model, spec.model_family) == ("/models/smolvlm", "hf_vlm")
    assert spec_of(tmp_path, model="tiny-llava").model_family == "hf_vlm"  # a preset name
    assert spec_of(tmp_path, model="tiny").model_family == "flamingo"
    settings = spec.lora_settings()  # the paper's LoRA (paper.md §3)
    assert (settings.r, settings.alpha, settings.dropout) == (64, 16, 0.1)
    assert settings.target_modules == PROJECTIONS
    # the dumped spec (what the workers validate again) keeps the family
    again = parse_spec(spec.model_dump(mode="json"))
    assert (again.model, again.model_family) == (spec.model, "hf_vlm")


@pytest.mark.parametrize(("extra", "message"), [
    ({"model": "tiny", "lora": {"r": 8}}, "lora: for model family hf_vlm only"),
    ({"model": "tiny", "trainable": {"connector": True}}, "connector: unknown part"),
    ({"trainable": {"connector": True, "xattn_attn": False}},
     "connector: True, xattn_attn: False: all name the hf_vlm connector"),
    ({"trainable": {"vison": True}}, "vison: unknown part"),
    ({"model": {"family": "hf", "path": "/m"}}, "model.family: received 'hf'"),
    ({"model": {"path": "/m", "kind": "x"}}, "model: received"),
    ({"rewrite_prompt": "released"}, "rewrite_prompt: 'released'"),
    ({"stage": "flamingo_pretrain"}, "stage: 'flamingo_pretrain'"),
    ({"lora": {"r": 0}}, "lora.r"),
])
def test_spec_errors_name_the_field(tmp_path: Path, extra: dict[str, Any],
                                    message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        spec_of(tmp_path, **extra)


def test_stage_parts_and_overrides(tmp_path: Path) -> None:
    lora = {"vision": False, "connector": False, "lm_lora": True, "lm_embeddings": True,
            "lm_full": False}
    for stage in ("rewriter", "clever_s1", "clever_s3"):
        assert spec_of(tmp_path, stage=stage).hf_parts() == lora
    assert spec_of(tmp_path, stage="clever_s2").hf_parts() == {
        "vision": False, "connector": True, "lm_lora": False, "lm_embeddings": False,
        "lm_full": False}
    # Flamingo names of what it adds between tower and LM mean the connector
    parts = spec_of(tmp_path, trainable={"perceiver": True, "lm_embeddings": False}).hf_parts()
    assert parts["connector"] and not parts["lm_embeddings"] and parts["lm_lora"]
    assert spec_of(tmp_path, stage="clever_s2",
                   trainable={"connector": False, "vision": True}).hf_parts()["vision"]


# --- the model family is checked at run start ---------------------------------------------


def test_a_folder_of_the_other_family_fails_at_run_start(tmp_path: Path) -> None:
    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder
    from pf_ray.train.launch import run_train

    flamingo = tmp_path / "flamingo"
    flamingo.mkdir()
    (flamingo / "config.json").write_text(json.dumps({"vision": {}, "lm": {}, "tokens": {}}))
    spec = spec_of(tmp_path, model={"family": "hf_vlm", "path": str(flamingo)})
    with pytest.raises(ValueError, match=r"is a flamingo model folder .* but the spec's "
                                         r"family is 'hf_vlm'"):
        run_train(spec)  # before any data is read or Ray is asked for anything
    hf = str(hf_vlm_preset_folder("tiny-llava"))
    with pytest.raises(ValueError, match=r"hf_vlm model folder \(config.json model_type "
                                         r"'llava'\), but the spec's family is 'flamingo'"):
        run_train(spec_of(tmp_path, model=hf))
    with pytest.raises(ValueError, match="'tiny' is a flamingo preset"):
        run_train(spec_of(tmp_path, model={"family": "hf_vlm", "path": "tiny"}))


# --- trainable parameters per stage ---------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("stage", ["rewriter", "clever_s1", "clever_s2", "clever_s3"])
def test_trainable_sets_are_exactly_the_stage_parts(tmp_path: Path, name: str,
                                                    stage: str) -> None:
    from pf_ray.model.hf_vlm.parts import trainable_names

    model = built(spec_of(tmp_path, model=name, stage=stage))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert all(params[n].dtype == torch.float32 for n in trainable)
    lora = {n for n in params if ".lora_A." in n or ".lora_B." in n}
    if stage == "clever_s2":  # the connector only, and no LoRA at all from a base model
        assert not lora
        assert trainable == {n for n in params if n.startswith(CONNECTOR[name])}
        assert set(trainable_names(model)["connector"]) == trainable
        return
    expected_lora = {f"{LM_LAYERS[name]}{layer}.{block}.{proj}.lora_{ab}.default.weight"
                     for layer in range(2) for ab in "AB"
                     for block, projs in (("self_attn", PROJECTIONS[:4]), ("mlp", PROJECTIONS[4:]))
                     for proj in projs}
    assert lora == expected_lora  # q/k/v/o/gate/up/down of each LM layer; never the tower
    assert trainable == expected_lora | {EMBEDDINGS[name]}
    assert not [n for n in params if n.startswith(VISION[name]) and "lora" in n]


# --- examples and batches ---------------------------------------------------------------


def test_rewriter_example_loss_on_the_revised_response(tmp_path: Path) -> None:
    from pf_ray.model.hf_vlm.prompts import IGNORE_INDEX
    from pf_ray.train.examples import example_builder

    builder = example_builder(spec_of(tmp_path, max_images=2))
    ex = builder(as_batch([pair(0), pair(1, images=2), pair(2, images=3), pair(3, images=0)]))
    assert ex["n_images"] == [1, 2, 0, 0] and ex["examples_skipped"] == [0, 0, 1, 0]
    ids, labels = ex["input_ids"][1], ex["labels"][1]
    learned = builder.tokenizer.decode([t for t, y in zip(ids, labels, strict=True)
                                        if y != IGNORE_INDEX])
    assert learned == "A square of colour 1.<end_of_utterance>\n"
    prompt = builder.tokenizer.decode(ids)
    assert prompt.count("<image>") == 2 * 4  # 4 tokens per 64 px image
    assert "(Drafted Response) a thing" in prompt and "(Revised Response) " in prompt
    images = ex["images"][1]  # Idefics3: (n, 3, H, W) and its mask (n, H, W)
    assert images["pixel_values"].shape == (2, 3, 64, 64)
    assert images["pixel_attention_mask"].shape == (2, 64, 64)
    assert ex["images"][3] == {} and "<image>" not in builder.tokenizer.decode(
        ex["input_ids"][3])
    # a cut through an image's tokens skips the example instead of truncating the image
    short = example_builder(spec_of(tmp_path, max_length=40))(as_batch([pair(0)]))
    assert short["examples_skipped"] == [1] and short["labels"][0] == [IGNORE_INDEX]


def test_chat_examples_get_later_turns_within_max_images(tmp_path: Path) -> None:
    from pf_ray.train.examples import example_builder

    spec = spec_of(tmp_path, stage="clever_s1", max_images=2, max_length=512)
    rows = [chat(i, image=i % 2 == 1) for i in range(8)]
    a = example_builder(spec)(as_batch(rows))
    b = example_builder(spec)(as_batch(rows))
    assert a["input_ids"] == b["input_ids"]  # seeded: the same examples every time
    tok = example_builder(spec).tokenizer
    turns = [tok.decode(ids).count("Assistant:") for ids in a["input_ids"]]
    assert max(turns) > 1  # multi-turn augmentation appended candidates
    assert all(n <= 2 for n in a["n_images"]) and any(n == 2 for n in a["n_images"])
    for ids, n in zip(a["input_ids"], a["n_images"], strict=True):
        assert tok.decode(ids).count("<image>") == 4 * n
    assert all(len(ids) <= 512 for ids in a["input_ids"])


@pytest.mark.parametrize("name", MODELS)
def test_collate_shapes_and_the_placeholder_image(tmp_path: Path, name: str) -> None:
    from pf_ray.model.hf_vlm.prompts import IGNORE_INDEX
    from pf_ray.train.examples import example_builder
    from pf_ray.train.hf_data import collate_hf

    spec = spec_of(tmp_path, model=name)
    builder = example_builder(spec)
    ex = builder(as_batch([pair(0, images=2), pair(1, images=0), pair(2)]))
    batch = collate_hf(ex, builder, torch.device("cpu"))
    b, t = batch["input_ids"].shape
    assert (b, t) == (3, max(len(x) for x in ex["input_ids"]))
    if name == "tiny-idefics3":  # (B, N_max, 3, H, W), zero images pad the rows with fewer
        assert batch["pixel_values"].shape == (3, 2, 3, 64, 64)
        assert batch["pixel_attention_mask"].shape == (3, 2, 64, 64)
        assert not batch["pixel_values"][1].any() and not batch["pixel_values"][2, 1].any()
    else:  # (total_images, 3, H, W)
        assert batch["pixel_values"].shape == (3, 3, 64, 64)
    model = built(spec)
    with torch.no_grad():
        loss = model(**batch, use_cache=False).loss
    assert torch.isfinite(loss)
    # a micro-batch without any image still runs the vision tower (FSDP's collectives):
    # a placeholder image after example 0, outside the loss
    text = builder(as_batch([pair(1, images=0), pair(3, images=0)]))
    plain = collate_hf(text, builder, torch.device("cpu"))
    n = len(builder.placeholder["input_ids"])
    assert plain["input_ids"].shape[1] == len(text["input_ids"][0]) + n
    assert (plain["labels"][0, -n:] == IGNORE_INDEX).all()
    assert plain["pixel_values"].shape == ((2, 1, 3, 64, 64) if name == "tiny-idefics3"
                                           else (1, 3, 64, 64))
    with torch.no_grad():
        with_placeholder = model(**plain, use_cache=False).logits[0, :len(text["input_ids"][0])]
        alone = model(input_ids=torch.tensor([text["input_ids"][0]]), use_cache=False).logits[0]
    assert torch.allclose(with_placeholder, alone, atol=1e-5)  # it changes no real token


# --- the export and the next stage ------------------------------------------------------


PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


def greedy(model: Any, processor: Any) -> list[int]:
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator

    gen = HFVLMGenerator(model=model, processor=processor,
                         decoding=DecodingConfig(max_new_tokens=12))
    (ids,) = gen.generate_token_ids([PROMPT], [[Image.new("RGB", (64, 64), (250, 10, 10))]])
    return ids


def logits(model: Any, processor: Any) -> torch.Tensor:
    enc = processor(text=[PROMPT], images=[[Image.new("RGB", (64, 64), (250, 10, 10))]],
                    return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("export_lora", ["adapter", "merged"])
def test_export_reloads_to_the_same_greedy_tokens(tmp_path: Path, export_lora: str) -> None:
    from pf_ray.model.hf_vlm.load import load_vlm
    from pf_ray.train.hf_export import write_hf_export

    spec = spec_of(tmp_path, export=str(tmp_path / "export"), export_lora=export_lora)
    model = train(spec, [pair(i) for i in range(4)])
    write_hf_export(model.state_dict(), spec, step=3)
    export = tmp_path / "export"
    marker = json.loads((export / "_export.json").read_text())
    assert (marker["step"], marker["export_lora"]) == (3, export_lora)
    assert (export / "adapter").is_dir() == (export_lora == "adapter")
    if export_lora == "adapter":
        with safe_open(str(export / "adapter" / "adapter_model.safetensors"), "pt") as f:
            keys = set(f.keys())
        assert "base_model.model.model.text_model.layers.0.self_attn.q_proj.lora_A.weight" in keys
        assert len(keys) == 28 and all(k.startswith("base_model.model.model.text_model.")
                                       for k in keys)
    base = load_file(str(export / "model.safetensors"))
    assert not [k for k in base if "lora" in k or "base_layer" in k]
    # the trained embeddings are in the base
    assert torch.equal(base["model.text_model.embed_tokens.weight"],
                       model.state_dict()["model.text_model.embed_tokens.weight"])
    loaded, processor = load_vlm(str(export), device="cpu")
    assert greedy(loaded, processor) == greedy(model, processor)
    assert torch.allclose(logits(loaded, processor), logits(model, processor), atol=1e-4)


def test_next_stages_continue_the_adapter_and_stage2_trains_the_connector(
        tmp_path: Path) -> None:
    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder
    from pf_ray.train.hf_build import check_spec_model
    from pf_ray.train.hf_export import write_hf_export

    s1 = spec_of(tmp_path, stage="clever_s1", export=str(tmp_path / "s1"))
    rows = [chat(i, image=True) for i in range(4)]
    write_hf_export(train(s1, rows).state_dict(), s1, step=3)
    adapter = load_file(str(tmp_path / "s1" / "adapter" / "adapter_model.safetensors"))

    # stage 2 from stage 1's export: the adapter is loaded, frozen and written again; the
    # connector trains into the base
    s2 = spec_of(tmp_path, stage="clever_s2", model={"family": "hf_vlm",
                                                   "path": str(tmp_path / "s1")},
                 export=str(tmp_path / "s2"))
    model = built(s2)
    lora = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    assert lora and not any(p.requires_grad for p in lora.values())
    write_hf_export(train(s2, rows).state_dict(), s2, step=3)
    assert load_file(str(tmp_path / "s2" / "adapter" / "adapter_model.safetensors")).keys() \
        == adapter.keys()
    for k, v in load_file(str(tmp_path / "s2" / "adapter" /
                               "adapter_model.safetensors")).items():
        assert torch.equal(v, adapter[k]), k
    before = load_file(str(tmp_path / "s1" / "model.safetensors"))
    after = load_file(str(tmp_path / "s2" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.connector.") for k in changed), changed

    # stage 3 from stage 2's export: the same LoRA trains again, from the adapter's values
    s3 = spec_of(tmp_path, stage="clever_s3", model={"family": "hf_vlm",
                                                   "path": str(tmp_path / "s2")})
    model = built(s3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if ".lora_" in n} == {n for n in lora}
    from pf_ray.model.lora import to_peft_key

    for n, p in model.named_parameters():
        if ".lora_" in n:
            assert torch.equal(p.detach(), adapter[to_peft_key(n)]), n
    # a lora block that is not the adapter's own settings is refused at run start
    with pytest.raises(ValueError, match=r"lora: the model's adapter/ .*\(r: spec 8, "
                                         r"adapter 64\)"):
        check_spec_model(spec_of(tmp_path, stage="clever_s3", lora={"r": 8},
                                 model={"family": "hf_vlm", "path": str(tmp_path / "s2")}))
    # stage 2 from a base model exports no adapter
    s2_base = spec_of(tmp_path, stage="clever_s2", export=str(tmp_path / "s2b"))
    write_hf_export(train(s2_base, rows, steps=1).state_dict(), s2_base, step=1)
    assert not (tmp_path / "s2b" / "adapter").exists()
    preset = load_file(str(hf_vlm_preset_folder("tiny-idefics3") / "model.safetensors"))
    after = load_file(str(tmp_path / "s2b" / "model.safetensors"))
    assert {k for k in preset if not torch.equal(preset[k], after[k])} <= {
        k for k in preset if k.startswith("model.connector.")}


def test_a_merged_export_replaces_an_earlier_adapter(tmp_path: Path) -> None:
    from pf_ray.train.hf_export import write_hf_export

    spec = spec_of(tmp_path, export=str(tmp_path / "export"))
    state = train(spec, [pair(0), pair(1)], steps=1).state_dict()
    write_hf_export(state, spec, step=1)
    assert (tmp_path / "export" / "adapter").is_dir()
    merged = spec_of(tmp_path, export=str(tmp_path / "export"), export_lora="merged")
    write_hf_export(state, merged, step=1)
    assert not (tmp_path / "export" / "adapter").exists()
    assert (tmp_path / "export" / "_export.json").exists()


def test_bf16_folder_trains_fp32_masters_and_exports_bf16(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder
    from pf_ray.train.hf_export import write_hf_export

    source = hf_vlm_preset_folder("tiny-idefics3")
    folder = tmp_path / "bf16"
    AutoModelForImageTextToText.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(
        folder)
    AutoProcessor.from_pretrained(source).save_pretrained(folder)
    spec = spec_of(tmp_path, model={"family": "hf_vlm", "path": str(folder)},
                   export=str(tmp_path / "export"))
    model = train(spec, [pair(0), pair(1)], steps=1, bf16=True)
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}
    write_hf_export(model.state_dict(), spec, step=1)
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}


def test_activation_checkpointing_gives_the_same_gradients(tmp_path: Path) -> None:
    from pf_ray.train.examples import example_builder
    from pf_ray.train.hf_data import collate_hf

    grads = []
    for on in (False, True):
        spec = spec_of(tmp_path, activation_checkpointing=on,
                       lora={"r": 8, "alpha": 16, "dropout": 0.0})
        model = built(spec).train()
        builder = example_builder(spec)
        batch = collate_hf(builder(as_batch([pair(0), pair(1)])), builder, torch.device("cpu"))
        model(**batch, use_cache=False).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


@pytest.fixture()
def gloo_world_1(tmp_path: Path) -> Any:
    """A one-rank gloo process group (FSDP2's sharded build without Ray)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_sharded_build_keeps_a_tied_head_tied(tmp_path: Path, gloo_world_1: Any) -> None:
    """SmolVLM ties its head to the embeddings: the meta skeleton of the sharded build, the
    FSDP units and the export keep them one tensor (trained once, exported once)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder
    from pf_ray.model.hf_vlm.load import load_vlm
    from pf_ray.train.examples import example_builder
    from pf_ray.train.hf_build import build_hf_for_training
    from pf_ray.train.hf_data import collate_hf
    from pf_ray.train.hf_export import write_hf_export

    source, folder = hf_vlm_preset_folder("tiny-idefics3"), tmp_path / "tied"
    config = AutoConfig.from_pretrained(source)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    AutoModelForImageTextToText.from_pretrained(source, config=config).save_pretrained(folder)
    AutoProcessor.from_pretrained(source).save_pretrained(folder)
    spec = spec_of(tmp_path, model={"family": "hf_vlm", "path": str(folder)},
                   export=str(tmp_path / "export"))
    model = build_hf_for_training(spec, device=torch.device("cpu"), sharded=True, rank=0,
                                  world=1, bf16=False).model
    assert type(model).__name__ == "FSDPIdefics3ForConditionalGeneration"
    assert model.lm_head.weight is model.get_input_embeddings().weight
    builder = example_builder(spec)
    batch = collate_hf(builder(as_batch([pair(0), pair(1)])), builder, torch.device("cpu"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch, use_cache=False).loss.backward()
    opt.step()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    embeddings = full["model.text_model.embed_tokens.weight"]
    assert torch.equal(full["lm_head.weight"], embeddings)
    write_hf_export(full, spec, step=1)
    loaded, _ = load_vlm(str(tmp_path / "export"), device="cpu")
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    assert torch.equal(loaded.get_input_embeddings().weight, embeddings)
