"""The tiny tokenizer and the pinned prompt formats."""

from __future__ import annotations

import pytest

from pf_ray.model.presets import TINY_TOKENS
from pf_ray.model.prompts import (
    IGNORE_INDEX,
    SYSTEM_MESSAGE,
    Turn,
    chat_text,
    clean_response,
    encode_chat,
    encode_rewrite,
    rewrite_text,
)
from pf_ray.model.tokenizer import (
    _tiny_tokenizer_json,
    build_tiny_tokenizer,
    check_tokenizer,
    load_tokenizer,
    token_ids,
)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_tiny_tokenizer_is_deterministic_with_flamingo_tokens(tok):
    assert _tiny_tokenizer_json.__wrapped__() == _tiny_tokenizer_json.__wrapped__()
    assert len(tok) == 1024
    assert token_ids(tok) == TINY_TOKENS
    assert tok.convert_ids_to_tokens([0, 1, 2, 1021, 1022, 1023]) == [
        "<unk>", "<s>", "</s>", "<|endofchunk|>", "<image>", "<PAD>"]
    assert tok("x<image><|endofchunk|>y", add_special_tokens=False).input_ids[1:3] == [1022, 1021]
    text = "Ünïcödé ✓ and 12 plus 34 = 46\n### Human:"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok.padding_side == "left"


def test_tokenizer_checks_and_folder_round_trip(tok, tmp_path):
    check_tokenizer(tok, TINY_TOKENS, 1024)
    with pytest.raises(ValueError, match=r"media=\(1022, 7\)"):
        check_tokenizer(tok, TINY_TOKENS.__class__(**{**TINY_TOKENS.__dict__, "media": 7}))
    tok.save_pretrained(tmp_path / "t")
    again = load_tokenizer(tmp_path / "t")
    assert again.get_vocab() == tok.get_vocab() and token_ids(again) == TINY_TOKENS


def test_chat_format_next_image():
    turns = [Turn("What is this?", "A red circle.", images=1), Turn("Sure?", "Yes.")]
    assert chat_text(turns, "next_image") == (
        "<s>" + SYSTEM_MESSAGE
        + "\n### Human: What is this?<image><|endofchunk|>\n### Assistant: A red circle.</s>"
        + "\n### Human: Sure?\n### Assistant: Yes.</s>")


def test_chat_format_previous_image_and_generation_prompt():
    assert chat_text([Turn("What is this?", images=1)], "previous_image") == (
        "<s>" + SYSTEM_MESSAGE + "\n### Human: <image>What is this?\n### Assistant: ")
    turns = [Turn("What is this?", images=2)]
    assert chat_text(turns, "previous_image") == (
        "<s>" + SYSTEM_MESSAGE + "\n### Human: Image 1: <image>, Image 2: <image>\n"
        "What is this?\n### Assistant: ")


def test_several_images_are_named_where_they_are_marked():
    """The released multi-image layout: each image named in the text and marked where it
    is named, so under the next-image mask each name attends to its own image."""
    turns = [Turn("What changed?", images=2)]
    assert chat_text(turns, "next_image") == (
        "<s>" + SYSTEM_MESSAGE + "\n### Human: What changed?\nImage 1: <image><|endofchunk|>, "
        "Image 2: <image><|endofchunk|>\n### Assistant: ")
    text = rewrite_text("What changed?", "a car left", images=2)
    assert text.count("<image>") == 2 and "Image 2: <image><|endofchunk|>" in text


def test_rewriter_format():
    assert rewrite_text("Describe the image.", "red circle", "There is a red circle.") == (
        "<s>" + SYSTEM_MESSAGE + "\n### Human: Describe the image.<image><|endofchunk|>"
        "\n### Assistant: (Drafted Response) red circle (Revised Response) "
        "There is a red circle.</s>")
    assert SYSTEM_MESSAGE == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions.")


def test_released_rewriter_format():
    """The released Polite Flamingo weights' prompt, as their README's get_prompt builds it
    (``mode='polite_flamingo'``; "Assistent" and the colons as there)."""
    released = ("A chat between a curious human and an artificial intelligence assistant. The "
                "assistant gives helpful, detailed, and polite answers to the user's questions."
                "\n### Human: Describe the image.<image><|endofchunk|>"
                "\n### Assistent: (Drafted Response): red circle\n (Revised Response): ")
    assert rewrite_text("Describe the image.", "red circle", prompt_format="released") == (
        "<s>" + released)
    assert rewrite_text("Describe the image.", "red circle", "There is a red circle.",
                        prompt_format="released") == (
        "<s>" + released + "There is a red circle.</s>")
    with pytest.raises(ValueError, match="prompt_format"):
        rewrite_text("Describe the image.", "red circle", prompt_format="readme")


def test_released_rewrite_loss_is_on_the_revised_response_only(tok):
    enc = encode_rewrite(tok, "Describe the image.", "red circle", "There is a red circle.",
                         prompt_format="released")
    assert [tok.decode(r) for r in _labelled(enc)] == ["There is a red circle.</s>"]
    prompt = encode_rewrite(tok, "Describe the image.", "red circle", prompt_format="released")
    assert enc.input_ids[:len(prompt.input_ids)] == prompt.input_ids
    assert tok.decode(prompt.input_ids).endswith(
        "### Assistent: (Drafted Response): red circle\n (Revised Response): ")


def _labelled(enc):
    """Runs of labelled token ids."""
    runs, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("mode", ["next_image", "previous_image"])
def test_chat_loss_is_on_responses_and_eos_only(tok, mode):
    turns = [Turn("What colour is the circle?", "The circle is red.", images=1),
             Turn("And the square?", "The square is blue.")]
    enc = encode_chat(tok, turns, mode)
    assert enc.input_ids[0] == tok.bos_token_id and enc.num_images == 1
    runs = _labelled(enc)
    assert [tok.decode(r) for r in runs] == ["The circle is red.</s>", "The square is blue.</s>"]
    # the generation prompt for turn 2 is exactly the training sequence up to its response
    prompt = encode_chat(tok, [turns[0], Turn("And the square?")], mode)
    assert enc.input_ids[:len(prompt.input_ids)] == prompt.input_ids
    assert enc.labels[:len(prompt.labels)] == prompt.labels
    assert tok.decode(enc.input_ids[len(prompt.input_ids):]) == "The square is blue.</s>"


def test_rewrite_loss_is_on_the_revised_response_only(tok):
    enc = encode_rewrite(tok, "Describe the image.", "red circle", "There is a red circle.")
    assert [tok.decode(r) for r in _labelled(enc)] == ["There is a red circle.</s>"]
    prompt = encode_rewrite(tok, "Describe the image.", "red circle")
    assert enc.input_ids[:len(prompt.input_ids)] == prompt.input_ids
    assert tok.decode(prompt.input_ids, skip_special_tokens=False).endswith("(Revised Response) ")
    assert prompt.num_images == 1


def test_truncation_and_errors(tok):
    turns = [Turn("hi", "hello there, how are you today?", images=1)]
    full = encode_chat(tok, turns, "previous_image")
    enc = encode_chat(tok, turns, "previous_image", max_length=len(full.input_ids) - 3)
    assert enc.input_ids == full.input_ids[:-3] and enc.labels == full.labels[:-3]
    assert enc.num_images == 1
    assert encode_chat(tok, turns, "previous_image", max_length=5).num_images == 0
    with pytest.raises(ValueError, match="turn 0: only the last turn"):
        encode_chat(tok, [Turn("a"), Turn("b", "c")], "next_image")
    with pytest.raises(ValueError, match="mask mode: received 'both'"):
        encode_chat(tok, [Turn("a", images=1)], "both")  # type: ignore[arg-type]
    assert clean_response(" A red circle.\n### Human: and") == "A red circle."
