"""Distortion families: augmentation steps, box serialisation, prompts, pair planning."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from pf_ray.data.boxes import PREAMBLE, fmt_coord, serialise
from pf_ray.data.select import SelectConfig
from pf_ray.data.sources.coco import coco_box_to_xyxy
from pf_ray.distort.augment import (
    CANDIDATES,
    CHAR_ACTIONS,
    aug_count,
    augment,
    augment_until_changed,
    char_edits,
    detokenize,
    drop_sentences,
    shuffle_sentences,
    tokenize,
    word_case,
    word_edits,
)
from pf_ray.distort.llm_instructed import build_messages, check_output, pick_style
from pf_ray.distort.pairs import cpu_families, image_key, plan_pairs, row_seed
from pf_ray.distort.spec import MixtureConfig
from pf_ray.distort.styles import STYLES
from pf_ray.engines.prompting import cut_at_stop, guanaco_prompt
from pf_ray.steps.base import REJECT_REASON

TEXT = "The cat sat on the mat. It was a sunny day. Birds sang outside."


def test_each_augmentation_step_on_fixed_seeds() -> None:
    assert drop_sentences(TEXT, random.Random(1)) == "The cat sat on the mat It was a sunny day"
    assert shuffle_sentences(TEXT, random.Random(2)) == (
        " It was a sunny day\n Birds sang outside\n\nThe cat sat on the mat")
    expected_chars = {
        "insert": "The cat sat on the mat. It was a sunBnIy day. Bidr(ds s*a8ng outdsTidye.",
        "substitute": "The cat sat on the mat. It was a sunBI day. Bid(s s8*g outdTdy.",
        "swap": "The cat sat on the mat. It was a suynn day. Ibrsd asgn otsuied.",
        "delete": "The cat sat on the mat. It was a sun day. ird ng osde.",
    }
    for action in CHAR_ACTIONS:
        assert char_edits(TEXT, action, 0.3, 0.5, random.Random(3)) == expected_chars[action]
    # 17 tokens (periods included): ceil(0.3 * 17) = 6 words deleted, periods never
    assert word_edits(TEXT, "delete", 0.3, random.Random(4)) == (
        "The mat. a sunny day. Birds sang outside.")
    # swapping with the first word moves its capital ("The cat" -> "Cat the")
    assert word_edits(TEXT, "swap", 0.3, random.Random(4)) == (
        "Cat on the the sat mat. was a It sunny day. Birds sang outside.")
    assert word_edits(TEXT, "crop", 0.3, random.Random(4)) == (
        "The cat sat a sunny day. Birds sang outside.")


def test_full_chain_on_fixed_seeds() -> None:
    assert augment(TEXT, random.Random(0)) == ("The cat sat on the mat. It was a nsuyn day.",
                                               ["char_swap", "word_crop"])
    assert augment(TEXT, random.Random(1)) == ("Cat on sat the mat the",
                                               ["drop", "shuffle", "word_swap"])
    assert augment(TEXT, random.Random(3)) == ("Cat sat", ["drop", "shuffle", "word_delete"])


def test_nlpaug_tokenisation() -> None:
    text = "Hello, (big) world! It's 50% [done].\nNew line"
    assert tokenize(text) == ["Hello", ",", "(", "big", ")", "world", "!", "It", "'", "s",
                              "50", "%", "[", "done", "]", ".", "New", "line"]
    # nlpaug's reverse: single spaces (the newline is lost), punctuation re-attached,
    # brackets closed up unless punctuation follows, apostrophes left apart
    assert detokenize(tokenize(text)) == "Hello, (big) world! It ' s 50% [done ]. New line"
    # any character edit or word edit re-tokenises the whole text
    assert char_edits("a an the\nend", "delete", 1.0, 1.0, random.Random(0)) == "a an the end"
    assert word_edits("one two\nthree", "swap", 0.1, random.Random(0)).count("\n") == 0
    assert word_edits("single", "delete", 1.0, random.Random(0)) == "single"


def test_nlpaug_character_pool_and_case() -> None:
    drawn = set()
    for s in range(300):
        out = char_edits("abcdefghij klmnopqrst", "substitute", 1.0, 1.0, random.Random(s))
        drawn |= set(out) - set("abcdefghijklmnopqrst ")
    assert set("!@#$%^&*()_+") <= drawn and set(drawn) <= set(CANDIDATES)
    assert len(CANDIDATES) == 74
    # swaps keep the case of each position: "Birds" can become "Ibrds", never "iBrds"
    outs = {char_edits("Birds", "swap", 0.2, 1.0, random.Random(s)) for s in range(50)}
    assert all(o[0].isupper() and o[1:].islower() for o in outs)
    assert word_case("The") == "capitalize" and word_case("cat") == "lower"
    assert word_case("NASA") == "upper" and word_case("iPhone") == "mixed"
    assert word_case(".") == "unknown" and word_case("A") == "capitalize"
    # deleting the first word re-capitalises the second
    assert word_edits("The cat sat", "delete", 0.01, random.Random(1)) in (
        "Cat sat", "The sat", "The cat")
    assert {word_edits("The cat sat", "delete", 0.01, random.Random(s))
            for s in range(40)} == {"Cat sat", "The sat", "The cat"}


def test_augment_properties() -> None:
    assert aug_count(0, 0.5) == 0 and aug_count(3, 0.01) == 1 and aug_count(100, 0.9) == 10
    # short words keep their characters
    assert char_edits("a an the", "delete", 1.0, 1.0, random.Random(0)) == "a an the"
    # each step applied about half the time
    ops = Counter(op.split("_")[0] for s in range(2000) for op in augment(TEXT, random.Random(s))[1])
    for name in ("drop", "shuffle", "char", "word"):
        assert 900 < ops[name] < 1100, ops
    # the family redraws the chain until it changes the text (1 in 16 draws applies none)
    for s in range(300):
        out, ops = augment_until_changed(TEXT, random.Random(s))
        assert out.strip() and out != TEXT and ops
    assert augment_until_changed("ok", random.Random(0), tries=3)[0] == "ok"  # can't be edited


def test_box_serialiser_matches_hand_written_text() -> None:
    # A COCO-format example: 640x480 image, bbox [x, y, w, h] in pixels.
    boxes = [{"label": "person", **dict(zip(("x1", "y1", "x2", "y2"),
                                            coco_box_to_xyxy([320, 48, 64, 192], 640, 480),
                                            strict=True))},
             {"label": "horse", **dict(zip(("x1", "y1", "x2", "y2"),
                                           coco_box_to_xyxy([100, 121, 233, 240], 640, 480),
                                           strict=True))}]
    text = serialise(["A man riding a horse.", " A person on a brown horse in a field. "], boxes)
    assert text == (
        "A man riding a horse.\n"
        "A person on a brown horse in a field.\n"
        "\n"
        "The followings are specific object locations within the image, along with detailed "
        "coordinates. These coordinates are in the form of bounding boxes, represented as "
        "(x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond "
        "to the top left x, top left y, bottom right x, and bottom right y.\n"
        "person: [0.5, 0.1, 0.6, 0.5]\n"
        "horse: [0.156, 0.252, 0.52, 0.752]\n")
    assert PREAMBLE in text
    # as the released PF-1M samples print them: round(v, 3) ("[0.44, 0.176, 0.591, 0.316]")
    assert [fmt_coord(v) for v in (0.44, 0.17604, 0.5911, 0.316)] == [
        "0.44", "0.176", "0.591", "0.316"]
    assert fmt_coord(0.5) == "0.5" and fmt_coord(1.2) == "1.0" and fmt_coord(-0.1) == "0.0"
    assert fmt_coord(0.1234) == "0.123" and fmt_coord(0.9999) == "1.0"


def test_guanaco_prompt_is_the_papers() -> None:
    prompt = guanaco_prompt(build_messages("What is it?", "It is a red ball.", "X."))
    assert prompt.startswith(
        "A chat between a curious human and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions.\n"
        "### Human: What is it?\n### Assistant: It is a red ball.\n### Human: Your reply's "
        "style, tone, and politeness are excellent")
    assert "socially inept robotic assistant to respond to your request. X. The following" \
        in prompt
    assert prompt.endswith("and I will not add more content after finishing this response:"
                           '\n\n"')
    assert len(STYLES) == 24 and len({n for n, _ in STYLES}) == 24
    draws = Counter(pick_style(random.Random(s))[0] is None for s in range(4000))
    assert 1850 < draws[True] < 2150  # a style with probability 0.5


def test_output_cut_and_checks() -> None:
    assert cut_at_stop('red ball" and more') == "red ball"
    assert cut_at_stop("red ball\n### Human: next") == "red ball"
    assert cut_at_stop("  no stop  ") == "no stop"
    original = "It is a red ball, lying on the grass."
    assert check_output(original, "") == "llm_empty"
    assert check_output(original, " it is a red ball, lying on the GRASS. ") == "llm_unchanged"
    # longer outputs are kept unless asked (the paper's styles lengthen text on purpose)
    assert check_output(original, "A red ball. " * 9) is None
    assert check_output(original, "A red ball. " * 9, reject_longer=True) == "llm_longer"
    assert check_output(original, "I'm sorry, I can't.") == "llm_refusal"
    assert check_output(original, "red ball grass") is None


def _batch(rows: list[dict]) -> dict:
    return {k: [r.get(k) for r in rows] for k in ("id", "source", "task", "conversations",
                                                  "image", "image_bytes", "extra_images",
                                                  "captions_boxes")}


def _conv(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


def test_plan_pairs_rejects_and_determinism() -> None:
    rows = [
        {"id": "a:1", "source": "a", "task": "t", "conversations": _conv(("user", "q"),
                                                                         ("assistant", "ans."))},
        {"id": "a:2", "source": "a", "task": "t", "conversations": _conv(("user", "q"))},
        {"id": "a:3", "source": "a", "task": "t", "conversations": _conv(("user", "q"),
                                                                         ("assistant", "  "))},
        {"id": "a:4", "source": "a", "task": "t", "conversations": _conv(("user", "q"),
                                                                         ("assistant", "x" * 50))},
        {"id": "b:5", "source": "b", "task": "t", "conversations": _conv(("user", "q"),
                                                                         ("assistant", "ok"))},
        {"id": "a:6", "source": "a", "task": "t", "conversations": _conv(("assistant", "hi"),
                                                                         ("user", "q"))},
    ]
    kwargs = {"seed": 3, "mixture": MixtureConfig(), "select": SelectConfig(sources=["a"]),
              "llm_enabled": True, "max_chars": 20}
    out = plan_pairs(_batch(rows), **kwargs)
    assert out[REJECT_REASON] == [None, "no_assistant_turn", "empty_text", "text_too_long",
                                  "not_selected", "no_assistant_turn"]
    assert out["family"][0] == "llm" and out["seed"][0] == row_seed(3, "a:1")
    assert out == plan_pairs(_batch(rows), **kwargs)
    no_llm = plan_pairs(_batch(rows[:1]), **{**kwargs, "llm_enabled": False})
    assert no_llm[REJECT_REASON] == ["no_family"]  # text rows only have the llm family


def test_mixture_follows_the_weights() -> None:
    img = [{"id": f"s:{i}", "source": "s", "task": "detail", "image": "x.jpg",
            "conversations": _conv(("user", "Describe."), ("assistant", "A long answer.")),
            "captions_boxes": json.dumps({"captions": ["c"], "boxes": []})}
           for i in range(3000)]
    out = plan_pairs(_batch(img), seed=0, mixture=MixtureConfig(), select=SelectConfig(),
                     llm_enabled=True, max_chars=8000)
    counts = Counter(out["family"])
    # image_with_boxes default: boxes 14 : llm 5.7 : augment 3.3 (of 23)
    assert abs(counts["boxes"] / 3000 - 14 / 23) < 0.03
    assert abs(counts["llm"] / 3000 - 5.7 / 23) < 0.03
    for r in img:
        r["task"] = "conversation"  # boxes only for detailed descriptions
    out = plan_pairs(_batch(img), seed=0, mixture=MixtureConfig(), select=SelectConfig(),
                     llm_enabled=False, max_chars=8000)
    assert set(out["family"]) == {"augment"}


def test_cpu_families() -> None:
    batch = {"id": ["a", "b", "c"], "family": ["augment", "boxes", "llm"],
             "style": [None, None, "typos"], "seed": [1, 2, 3],
             "original": [TEXT, "Detail.", "x"],
             "captions_boxes": [None, json.dumps({"captions": ["a cat"], "boxes": [
                 {"label": "cat", "x1": 0, "y1": 0, "x2": 0.5, "y2": 0.25}]}), None]}
    out = cpu_families(batch)
    assert out["distorted"][0] != TEXT and out["style"][0] != "typos"
    assert out["distorted"][1] == f"a cat\n\n{PREAMBLE}\ncat: [0.0, 0.0, 0.5, 0.25]\n"
    assert out["distorted"][2] is None and out["style"][2] == "typos"
    assert out == cpu_families(batch)


@pytest.mark.parametrize(("ref", "key"), [
    ("COCO_train2014_000000215677.jpg", "215677"), ("000000215677.jpg", "215677"),
    ("s3://b/train2017/000000215677.jpg", "215677"), ("synthetic://0/5?size=64", "synthetic://0/5"),
    ("tar://a/7.jpg::shards/00001.tar", "7"), (None, None)])
def test_image_key(ref: str | None, key: str | None) -> None:
    assert image_key(ref) == key
