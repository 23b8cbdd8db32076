"""The hf_vlm family's core: tiny builders, family in specs, LoRA placement, prompts through
the chat template, and pf-ray's batched generator (no Ray)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pf_ray.model.hf_vlm.tiny import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("idefics3"))


@pytest.fixture(scope="module")
def generator(idefics3: Path) -> object:
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator

    return HFVLMGenerator(str(idefics3), decoding=DecodingConfig(max_new_tokens=6))


def _img(colour: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


# ------------------------------------------------------------------------------ family


def test_split_model_field_forms() -> None:
    from pf_ray.model.hf_vlm.family import split_model_field

    assert split_model_field({"model": {"family": "hf_vlm", "path": "s3://b/m"}}) == {
        "model": "s3://b/m", "model_family": "hf_vlm"}
    assert split_model_field({"model": "tiny-idefics3"}) == {
        "model": "tiny-idefics3", "model_family": "hf_vlm"}
    assert split_model_field({"model": "tiny"}) == {"model": "tiny"}  # flamingo default
    with pytest.raises(ValueError, match=r"model.family: received 'llava'; allowed: "
                                         r"flamingo, hf_vlm"):
        split_model_field({"model": {"family": "llava", "path": "x"}})
    with pytest.raises(ValueError, match="a mapping with path and family"):
        split_model_field({"model": {"family": "hf_vlm"}})


def test_folder_family_is_checked_both_ways(idefics3: Path, tmp_path: Path) -> None:
    from pf_ray.engines.flamingo import load_model
    from pf_ray.faults import ModelUnavailable
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.hf_vlm.load import load_vlm
    from pf_ray.model.loading import build_model, model_tokenizer

    with pytest.raises(ModelUnavailable, match=r"is an hf_vlm model folder \(config.json "
                                               r"model_type 'idefics3'\).*family is 'flamingo'"):
        load_model(str(idefics3))
    flamingo = tmp_path / "flamingo"
    save_pretrained(build_model("tiny"), flamingo, model_tokenizer("tiny"))
    with pytest.raises(ModelUnavailable, match=r"is an flamingo model folder.*family is "
                                               r"'hf_vlm'"):
        load_vlm(str(flamingo))
    with pytest.raises(ModelUnavailable, match="no config.json there"):
        load_vlm(str(tmp_path / "absent"))


# ------------------------------------------------------------------------------ parts


def test_lora_stays_in_the_language_model(idefics3: Path) -> None:
    import re

    from transformers import AutoModelForImageTextToText

    from pf_ray.model.config import LoraSettings
    from pf_ray.model.hf_vlm.parts import add_lm_lora, count_by_part, lm_lora_pattern

    model = AutoModelForImageTextToText.from_pretrained(idefics3)
    vision_q = [n for n, _ in model.named_modules() if n.startswith("model.vision_model.")
                and n.endswith("q_proj")]
    assert vision_q  # the trap: the tower has q_proj too
    pattern = lm_lora_pattern(("q_proj", "v_proj"))
    assert not any(re.fullmatch(pattern, n) for n in vision_q)
    adapted = add_lm_lora(model, LoraSettings(r=4, alpha=8, target_modules=("q_proj", "v_proj")))
    assert adapted == sorted(f"model.text_model.layers.{i}.self_attn.{p}"
                             for i in range(2) for p in ("q_proj", "v_proj"))
    counts = count_by_part(model)
    assert counts["lm_lora"] == 2 * 2 * 4 * (128 + 128)  # layers x projections x r x (in+out)
    with pytest.raises(ValueError, match="matched no module"):
        add_lm_lora(AutoModelForImageTextToText.from_pretrained(idefics3),
                    LoraSettings(r=4, alpha=8, target_modules=("to_q",)))


def test_flamingo_stages_map_onto_hf_parts() -> None:
    from pf_ray.model.hf_vlm.parts import hf_assignment, part_of
    from pf_ray.model.trainability import STAGES

    assert hf_assignment(STAGES["clever_s2"]) == {
        "vision": False, "connector": True, "lm_lora": False, "lm_embeddings": False,
        "lm_full": False}
    assert hf_assignment(STAGES["polite_flamingo"]) == {
        "vision": False, "connector": False, "lm_lora": True, "lm_embeddings": True,
        "lm_full": False}
    assert part_of("model.visual.merger.mlp.0.weight") == "connector"  # Qwen2-VL's merger
    assert part_of("model.visual.blocks.0.attn.qkv.weight") == "vision"
    with pytest.raises(ValueError, match="belongs to no part"):
        part_of("encoder.layer.0.weight")


# ------------------------------------------------------------------------------ prompts


def test_rewrite_prompt_through_the_chat_template(idefics3: Path) -> None:
    from transformers import AutoProcessor

    from pf_ray.model.hf_vlm.prompts import (
        IGNORE_INDEX,
        REVISED_PREFIX,
        encode_segments,
        render,
        rewrite_messages,
        segments,
    )
    from pf_ray.model.hf_vlm.tiny import IMAGE_SEQ_LEN

    p = AutoProcessor.from_pretrained(idefics3)
    prompt = render(p, rewrite_messages("What colour?", "red", 2))
    assert prompt.endswith("User:<image><image>What colour?\n(Drafted Response) red"
                           "<end_of_utterance>\nAssistant: (Revised Response) ")
    full = rewrite_messages("What colour?", "red", 2, revised="It is red.")
    pieces = segments(p, full, REVISED_PREFIX)
    assert pieces == [(prompt, False), ("It is red.<end_of_utterance>\n", True)]
    enc = encode_segments(p, pieces, [_img("red"), _img("blue")])
    image_id = p.tokenizer.convert_tokens_to_ids("<image>")
    assert enc["input_ids"].count(image_id) == 2 * IMAGE_SEQ_LEN
    learnt = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True)
              if lab != IGNORE_INDEX]
    assert p.tokenizer.decode(learnt) == "It is red.<end_of_utterance>\n"
    assert enc["image_inputs"][0]["pixel_values"].shape == (1, 2, 3, 64, 64)
    with pytest.raises(ValueError, match="would cut an image"):
        encode_segments(p, pieces, [_img("red"), _img("blue")], max_length=20)
    with pytest.raises(ValueError, match="3 images given, the prompt marks 2"):
        encode_segments(p, pieces, [_img("red")] * 3)


def test_multi_turn_chat_segments(idefics3: Path) -> None:
    from transformers import AutoProcessor

    from pf_ray.model.hf_vlm.prompts import chat_messages, segments
    from pf_ray.model.prompts import Turn

    p = AutoProcessor.from_pretrained(idefics3)
    msgs = chat_messages([Turn("hi", "Hello!", images=1), Turn("more?", "Yes.")])
    pieces = segments(p, msgs)
    assert [r for _, r in pieces] == [False, True, False, True]
    assert "".join(t for t, _ in pieces) == p.apply_chat_template(msgs, tokenize=False)
    assert pieces[1][0] == " Hello!<end_of_utterance>\n"
    with pytest.raises(ValueError, match="only the last turn"):
        chat_messages([Turn("a", None), Turn("b", "c")])


# ------------------------------------------------------------------------------ generator


def test_batched_generation_equals_one_by_one(generator: object) -> None:
    from pf_ray.engines.base import Prompt
    from pf_ray.model.hf_vlm.prompts import rewrite_messages

    rows = [("What colour?", "red", (_img("red"),)),
            ("Two images: what changed?", "a blue square appeared",
             (_img("red"), _img("blue", (48, 64)))),
            ("Describe the image in detail please.", "shapes", (_img("green"),))]
    prompts = [Prompt(user=q, images=imgs, messages=partial(rewrite_messages, q, d, len(imgs)))
               for q, d, imgs in rows]
    texts = generator.prompt_texts(prompts)
    batched = generator.generate_token_ids(texts, [p.images for p in prompts])
    single = [generator.generate_token_ids([t], [p.images])[0]
              for t, p in zip(texts, prompts, strict=True)]
    assert batched == single
    assert all(len(ids) == 6 for ids in batched)  # random weights: no turn end in 6 tokens
    results = generator.generate(prompts)
    assert [r.finish_reason for r in results] == ["length"] * 3


def test_prompt_too_long_is_a_row_reject(idefics3: Path) -> None:
    from pf_ray.engines.base import Prompt
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator
    from pf_ray.model.hf_vlm.prompts import rewrite_messages

    g = HFVLMGenerator(str(idefics3), decoding=DecodingConfig(max_new_tokens=4),
                       max_prompt_tokens=80)
    short = Prompt(user="", images=(_img("red"),),
                   messages=lambda: rewrite_messages("Colour?", "red", 1))
    long = Prompt(user="", images=(_img("red"),),
                  messages=lambda: rewrite_messages("Colour? " * 40, "red", 1))
    ok, rejected = g.generate([short, long])
    assert ok.reject is None and ok.finish_reason == "length"
    assert rejected.reject is not None and rejected.reject[0] == "prompt_too_long"
    assert "> 80 (max_prompt_tokens)" in rejected.reject[1]


def test_eval_model_source_takes_the_family() -> None:
    from pf_ray.eval.spec import ModelSource

    src = ModelSource(kind="model", name="clever", model={"family": "hf_vlm", "path": "/m"})
    assert (src.model, src.model_family) == ("/m", "hf_vlm")
    assert ModelSource(kind="model", name="c", model="/m").model_family == "flamingo"
