"""LLaMA tokenised as OpenFlamingo v1 did (transformers 4.28's slow ``LlamaTokenizer``): the
sentencepiece backend and the Rust one give the same ids, special tokens included.

No LLaMA tokenizer is available offline, so a small sentencepiece BPE model is trained here
with LLaMA's trainer settings (byte fallback, split digits, dummy prefix, no normalisation).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from pf_ray.model import convert
from pf_ray.model.checkpoint import load_folder_tokenizer, save_pretrained
from pf_ray.model.config import TokenIds
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.model.prompts import Turn, encode_chat, encode_rewrite
from pf_ray.model.tokenizer import (
    CORPUS,
    ENDOFCHUNK_TOKEN,
    MEDIA_TOKEN,
    build_llama_v1_tokenizer,
    check_tokenizer,
    load_tokenizer,
)

VOCAB = 700
TOKENS = TokenIds(media=VOCAB + 1, endofchunk=VOCAB, pad=0, bos=1, eos=2)  # as LLAMA_TOKENS

SAMPLES = [
    "Hello world",
    " leading space, then  two and   three spaces ",
    "What is this?<image><|endofchunk|>\n### Assistant: A red circle.",
    "A chat between a curious human.\n### Human: Describe <image> the image, please.",
    "<image>starts with an image",
    "x \n\t <image> \n y<|endofchunk|>\n\nlast",
    "<image><|endofchunk|><image><|endofchunk|>",
    "What is 12 plus 34? 12 plus 34 equals 46. 3.14159, 1,000,000",
    "Ünïcödé café naïve ✓ 🦩 中文",
    "  indented  twice\n\tand a tab\r\n",
    "code: x = [1, 2, 3]\n\n    return x",
    "<s>Hi</s> <unk> <PAD>",
    "▁already a piece marker",
    "", " ", "\n", "<image>",
]


def _train_sp(normalization: str = "identity") -> bytes:
    lines = [*CORPUS, *SAMPLES]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name=normalization,
        allow_whitespace_only_pieces=True, character_coverage=1.0, max_sentencepiece_length=16,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    return buf.getvalue()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("llama")
    (folder / "tokenizer.model").write_bytes(_train_sp())
    return folder


@pytest.fixture(scope="module")
def slow(llama_dir):
    return load_tokenizer(llama_dir, mode="llama_v1_slow")


@pytest.fixture(scope="module")
def fast(llama_dir):
    return load_tokenizer(llama_dir, mode="llama_v1")


def test_backends_and_flamingo_token_ids(slow, fast):
    assert "SentencePiece" in type(slow).__name__ and slow.is_fast is False
    assert fast.is_fast
    for tok in (slow, fast):
        check_tokenizer(tok, TOKENS, VOCAB + 3)
        assert len(tok) == VOCAB + 3 and tok.padding_side == "left"
        assert tok.convert_tokens_to_ids([ENDOFCHUNK_TOKEN, MEDIA_TOKEN, "<PAD>"]) == [
            VOCAB, VOCAB + 1, VOCAB + 2]


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_slow_and_fast_give_the_same_ids(slow, fast, add_special_tokens):
    for text in SAMPLES:
        ids = slow(text, add_special_tokens=add_special_tokens).input_ids
        assert fast(text, add_special_tokens=add_special_tokens).input_ids == ids, text
    batch = slow(SAMPLES, add_special_tokens=add_special_tokens).input_ids
    assert fast(SAMPLES, add_special_tokens=add_special_tokens).input_ids == batch


def test_slow_and_fast_encode_the_prompt_formats_alike(slow, fast):
    turns = [Turn("What is this?", "A red circle.", images=1), Turn("Sure?", "Yes, quite.")]
    for mode in ("next_image", "previous_image"):
        assert encode_chat(fast, turns, mode) == encode_chat(slow, turns, mode)
    for fmt in ("paper", "released"):
        args = ("Describe the image.", "red circle", "There is a red circle.")
        assert (encode_rewrite(fast, *args, prompt_format=fmt)
                == encode_rewrite(slow, *args, prompt_format=fmt))


def test_v1_rules_prefix_every_piece_and_strip_around_flamingo_tokens(fast):
    def ids(text: str) -> list[int]:
        return fast(text, add_special_tokens=False).input_ids

    # whitespace next to <image> / <|endofchunk|> is eaten (newlines too), and every run of
    # text between special tokens gets sentencepiece's "▁" prefix, as transformers 4.28 did
    assert ids("a b <image> \n c d") == ids("a b") + [TOKENS.media] + ids("c d")
    assert ids("x?<image><|endofchunk|>\n### Assistant:") == (
        ids("x?") + [TOKENS.media, TOKENS.endofchunk] + ids("### Assistant:"))
    assert fast("hi").input_ids == [TOKENS.bos, *ids("hi")]  # BOS as LlamaTokenizer
    assert ids(" x") != ids("x")  # spaces inside a run are kept (no whitespace collapsing)


def test_saved_tokenizers_reload_with_the_same_ids(slow, fast, tmp_path):
    config = dataclasses.replace(get_preset("tiny"), tokens=TOKENS, tokenizer="",
                                 tokenizer_mode="llama_v1")
    torch.manual_seed(0)
    model = build_flamingo(config)
    for name, tok in (("slow", slow), ("fast", fast)):
        mode = "llama_v1_slow" if name == "slow" else "llama_v1"
        model.config = dataclasses.replace(config, tokenizer_mode=mode)
        folder = save_pretrained(model, tmp_path / name, tokenizer=tok)
        again = load_folder_tokenizer(folder)
        assert again.is_fast == tok.is_fast
        assert again(SAMPLES).input_ids == tok(SAMPLES).input_ids
    # the fast folder keeps tokenizer.json only: the slow backend needs tokenizer.model
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_tokenizer(tmp_path / "fast" / "tokenizer", mode="llama_v1_slow")


def test_converter_takes_the_tokenizer_mode(llama_dir, slow, tmp_path, capsys):
    config = dataclasses.replace(get_preset("tiny"), tokens=TOKENS, tokenizer="")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    out = tmp_path / "converted"
    assert convert.main(["--config", str(tmp_path / "config.json"), "--out", str(out),
                         "--tokenizer", str(llama_dir),
                         "--tokenizer-mode", "llama_v1_slow"]) == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["tokenizer_mode"] == "llama_v1_slow"
    tok = load_folder_tokenizer(out)
    assert not tok.is_fast and tok(SAMPLES).input_ids == slow(SAMPLES).input_ids


def test_modes_are_checked(llama_dir, tmp_path):
    with pytest.raises(ValueError, match="allowed"):
        load_tokenizer(llama_dir, mode="sentencepiece")
    with pytest.raises(ValueError, match="mode 'auto' only"):
        load_tokenizer("tiny-bpe", mode="llama_v1")
    # a model that normalises text (NFKC) is not LLaMA-style: the Rust copy refuses it
    (tmp_path / "nfkc.model").write_bytes(_train_sp("nmt_nfkc"))
    with pytest.raises(ValueError, match="not a LLaMA-style"):
        build_llama_v1_tokenizer(tmp_path / "nfkc.model")


def test_released_rewriter_prompt_tokenises_as_released(fast):
    def ids(text: str) -> list[int]:
        return fast(text, add_special_tokens=False).input_ids

    enc = encode_rewrite(fast, "What is it?", "red ball", prompt_format="released")
    # the "\n" after <|endofchunk|> is stripped, as the released models saw it
    after = enc.input_ids[enc.input_ids.index(TOKENS.endofchunk) + 1:]
    assert after[:len(ids("### Assistent:"))] == ids("### Assistent:")
