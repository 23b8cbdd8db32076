"""Tokenizers: Flamingo's special tokens on a HF tokenizer, and the offline tiny tokenizer.

Flamingo adds three tokens after the LM's vocabulary, in OpenFlamingo v1's order:
``<|endofchunk|>`` (ends the text that belongs to an image), ``<image>`` (where an image's
latents are attended), ``<PAD>``. LLaMA's 32000 + 3 = 32003 (paper.md §3). The released models
then force pad/bos/eos to 0/1/2; :class:`~pf_ray.model.config.TokenIds` in the model config
is the source of truth and :func:`check_tokenizer` verifies a tokenizer against it.

``tiny-bpe``: no LLaMA tokenizer is reachable offline, so tiny presets use a byte-level BPE
trained in-process on :data:`CORPUS` (fixed text; training is deterministic): ids 0/1/2 are
``<unk>``/``<s>``/``</s>`` like LLaMA, merges fill up to 1021, then the three Flamingo
tokens make 1024. Byte-level means every string encodes (no unknown tokens).

How a folder is read is the model config's ``tokenizer_mode`` (:func:`load_tokenizer`):

``auto``           ``AutoTokenizer`` on the folder, with its own rules.
``llama_v1``       LLaMA's ``tokenizer.model`` read as OpenFlamingo v1 read it (the slow
                   ``LlamaTokenizer`` of transformers 4.28, see :func:`build_llama_v1_tokenizer`)
                   by an equal Rust tokenizer.
``llama_v1_slow``  the same with the sentencepiece (slow) backend itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import transformers
from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pf_ray.data.conversation import ENDOFCHUNK_TOKEN, MEDIA_TOKEN
from pf_ray.model.config import TOKENIZER_MODES, TokenIds, TokenizerMode

PAD_TOKEN = "<PAD>"
UNK_TOKEN = "<unk>"  # LLaMA's id 0: the released models pad with it
SP_MODEL = "tokenizer.model"  # a LLaMA folder's sentencepiece model
TINY = "tiny-bpe"
TINY_BASE_VOCAB = 1021  # <unk> <s> </s> + 256 bytes + 762 merges
TINY_VOCAB = TINY_BASE_VOCAB + 3  # + <|endofchunk|> <image> <PAD> = 1024

_WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "grey", "light", "beige", "black", "colour", "colours", "color", "circle", "square", "triangle", "diamond", "shape", "shapes", "object", "objects", "small", "large", "big", "tiny", "upper", "lower", "middle", "left", "right", "centre", "center", "top", "bottom", "corner", "side", "sides", "edge", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "hundred", "thousand", "image", "images", "picture", "photo", "drawing", "diagram", "background", "scene", "view", "figure", "region", "there", "is", "are", "was", "were", "be", "been", "the", "a", "an", "of", "in", "on", "at", "to", "for", "with", "and", "or", "but", "not", "no", "yes", "this", "that", "these", "those", "it", "its", "they", "them", "their", "what", "which", "who", "where", "when", "why", "how", "describe", "description", "detail", "details", "detailed", "elaborate", "thorough", "please", "thank", "you", "question", "answer", "answers", "choice", "choices", "option", "options", "rationale", "because", "so", "therefore", "count", "counting", "total", "number", "numbers", "plus", "minus", "equals", "sum", "add", "adding", "tens", "units", "check", "mix", "mixing", "paint", "primary", "secondary", "warm", "warmer", "cool", "cooler", "shade", "proportions", "exact", "polygon", "angle", "angles", "interior", "right", "degrees", "equal", "length", "rectangle", "rhombus", "fewest", "simple", "geometric", "plain", "flat", "clean", "look", "looks", "located", "find", "found", "appears", "contains", "shows", "show", "see", "seen", "can", "could", "would", "should", "will", "may", "might", "must", "do", "does", "did", "done", "have", "has", "human", "assistant", "system", "chat", "curious", "artificial", "intelligence", "helpful", "polite", "user", "drafted", "revised", "response", "responses", "instruction", "instructions", "input", "output", "rewrite", "caption", "captions", "box", "boxes", "label", "labels", "coordinates", "bounding", "floating", "ranging", "values", "overlap", "give", "gives", "given", "make", "makes", "made", "produce", "produces", "combine", "combining", "together", "about", "above", "below", "beside", "between", "inside", "outside", "near", "far", "next", "previous", "first", "last", "largest", "smallest", "bigger", "smaller", "more", "less", "most", "least", "many", "few", "several", "each", "every", "all"]

_SENTENCES = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "\n### Human: ", "\n### Assistant: ", "(Drafted Response) ", " (Revised Response) ",
    "Describe the following image in detail.",
    "Give an elaborate description of the image.",
    "What can you see in this picture? Please be thorough.",
    "How many shapes are there in the image?",
    "What colour is the circle? What shape is red? Is there a blue square in the image?",
    "The image shows three simple geometric shapes on a plain white background.",
    "In the upper left there is a small red circle. The largest of them is the blue square.",
    "The shapes do not overlap, and the flat colours give the picture a clean, diagram-like look.",
    "What objects are in the image, and where are they? What is this?",
    "Answer: A. The triangle in the lower right of the image is filled with green.",
    "Choices: (A) red (B) green (C) blue (D) yellow",
    "What is 12 plus 34? 12 plus 34 equals 46. You can check it by adding the tens first "
    "(10 + 30) and then the units (2 + 4).",
    "Mixing blue and yellow paint gives green. A triangle has three sides.",
    "The followings are specific object locations within the image, along with detailed "
    "coordinates. These coordinates are in the form of bounding boxes, represented as "
    "(x1, y1, x2, y2) with floating numbers ranging from 0 to 1.",
    "red circle: [0.12, 0.34, 0.56, 0.78]",
)


def _corpus() -> list[str]:
    """Fixed training text: the sentences, each word alone, and word pairs in a fixed order."""
    lines = list(_SENTENCES)
    lines += [" ".join(_WORDS[i:i + 12]) for i in range(0, len(_WORDS), 3)]
    lines += [f"{w.capitalize()} {v}." for w, v in zip(_WORDS, reversed(_WORDS), strict=True)]
    lines += [" ".join(str(n) for n in range(k, k + 20)) for k in range(0, 200, 20)]
    return lines


CORPUS = tuple(_corpus())


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_BASE_VOCAB, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if tok.get_vocab_size() != TINY_BASE_VOCAB:
        raise RuntimeError(f"tiny BPE reached {tok.get_vocab_size()} tokens, expected "
                           f"{TINY_BASE_VOCAB}: the corpus is too small for the merges")
    return tok.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The deterministic 1024-token byte-level BPE with Flamingo's tokens (ids 1021..1023)."""
    from tokenizers import Tokenizer

    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
                                   unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    add_flamingo_tokens(fast)
    return fast


def add_flamingo_tokens(tokenizer: PreTrainedTokenizerBase, pad: str = PAD_TOKEN, *,
                        strip: bool = False) -> None:
    """Add ``<|endofchunk|>``, ``<image>`` (special) and ``<PAD>``; set the pad token.

    ``pad`` names the token to pad with (``"<unk>"`` for the released LLaMA models, which
    force pad to id 0; ``<PAD>`` is still added so the vocabulary is 32003 as theirs).
    ``strip``: the tokens eat the whitespace on both sides, as in OpenFlamingo v1 (its
    transformers stripped it around special tokens added as plain strings, so e.g. the
    ``"\\n"`` of ``"<|endofchunk|>\\n### Assistant:"`` never reached the model).
    Padding side is left (generation); training collation pads on its own.
    """
    def token(content: str) -> str | AddedToken:
        return (AddedToken(content, lstrip=True, rstrip=True, normalized=False, special=True)
                if strip else content)

    tokenizer.add_special_tokens(
        {"additional_special_tokens": [token(ENDOFCHUNK_TOKEN), token(MEDIA_TOKEN)]})
    tokenizer.add_special_tokens({"pad_token": token(PAD_TOKEN)})
    if pad != PAD_TOKEN:
        tokenizer.pad_token = pad
    tokenizer.padding_side = "left"


def token_ids(tokenizer: PreTrainedTokenizerBase) -> TokenIds:
    """The ids of a tokenizer's special tokens, as a model config wants them."""
    def one(tok: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(tok))
    return TokenIds(media=one(MEDIA_TOKEN), endofchunk=one(ENDOFCHUNK_TOKEN),
                    pad=int(tokenizer.pad_token_id), bos=int(tokenizer.bos_token_id),
                    eos=int(tokenizer.eos_token_id))


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, tokens: TokenIds,
                    vocab_size: int | None = None) -> None:
    """Raise if the tokenizer's special-token ids differ from the model's."""
    got = token_ids(tokenizer)
    diff = {k: (getattr(got, k), getattr(tokens, k)) for k in ("media", "endofchunk", "pad",
                                                                "bos", "eos")
            if getattr(got, k) != getattr(tokens, k)}
    if diff:
        raise ValueError("tokenizer and model disagree on token ids (tokenizer, model): "
                         + ", ".join(f"{k}={v}" for k, v in diff.items()))
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the LM's vocabulary {vocab_size}")


def _llama_v1_rust(sp: Any) -> Tokenizer:
    """The Rust equal of a LLaMA-style sentencepiece BPE model read with the ``legacy`` rules
    (what transformers 4.28's ``LlamaConverter`` built): the pieces as a BPE vocabulary,
    merges ranked by the merged piece's score, byte fallback, spaces as "▁", and a "▁" before
    every piece of text (each run between added tokens), as SentencePiece's dummy prefix."""
    from tokenizers import decoders, models, normalizers

    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    normal = {piece for i, piece in enumerate(pieces)
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    merges = [(p[:k], p[k:]) for p in normal for k in range(1, len(p))
              if p[:k] in normal and p[k:] in normal]
    merges.sort(key=lambda m: (-sp.get_score(vocab[m[0] + m[1]]), vocab[m[0] + m[1]], m))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=pieces[sp.unk_id()],
                               fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


# checks that a model has LLaMA's normalisation (none, spaces kept, dummy prefix)
_PROBE = "  Ünï ①ﬁ\tA  b\n\n12,345 "


def build_llama_v1_tokenizer(sp_model: str | Path, *, slow: bool = False,
                             pad: str = UNK_TOKEN) -> PreTrainedTokenizerBase:
    """LLaMA's sentencepiece model read as OpenFlamingo v1 read it: transformers 4.28's slow
    ``LlamaTokenizer`` plus the Flamingo tokens added as plain strings. So every piece of
    text between special tokens gets SentencePiece's "▁" prefix (``legacy``), the whitespace
    around the Flamingo tokens is stripped (see :func:`add_flamingo_tokens`), and
    ``add_special_tokens=True`` prepends BOS.

    ``slow``: the sentencepiece backend itself (the released models' class); otherwise a
    Rust tokenizer built from the same pieces, which gives the same ids (tested) faster.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    names = {"unk_token": sp.id_to_piece(sp.unk_id()), "bos_token": sp.id_to_piece(sp.bos_id()),
             "eos_token": sp.id_to_piece(sp.eos_id())}
    tok: PreTrainedTokenizerBase
    if slow:
        # transformers 5 made LlamaTokenizer Rust-backed; its sentencepiece class is generic
        cls = getattr(transformers, "SentencePieceBackend", None) or transformers.LlamaTokenizer
        tok = cls(vocab_file=str(sp_model), legacy=True, add_bos_token=True,
                  add_eos_token=False, special_tokens_pattern="bos", **names)
    else:
        rust = _llama_v1_rust(sp)
        if rust.encode(_PROBE, add_special_tokens=False).ids != sp.encode(_PROBE):
            raise ValueError(f"{sp_model}: not a LLaMA-style sentencepiece model (it normalises "
                             f"text); use tokenizer_mode llama_v1_slow")
        tok = PreTrainedTokenizerFast(tokenizer_object=rust, add_bos_token=True, **names)
    add_flamingo_tokens(tok, pad=pad, strip=True)
    return tok


def load_tokenizer(spec: str | Path, pad: str | None = None, *,
                   mode: TokenizerMode = "auto") -> PreTrainedTokenizerBase:
    """``"tiny-bpe"``, or a local tokenizer folder read as ``mode`` says (module doc).

    A folder saved by :func:`pf_ray.model.checkpoint.save_pretrained` already has the
    Flamingo tokens; a plain LM tokenizer folder (e.g. LLaMA's) gets them added, with ``pad``
    as the pad token (default ``<PAD>``; ``<unk>`` in the ``llama_v1`` modes). The
    ``llama_v1`` modes read the folder's ``tokenizer.model``; without one, ``llama_v1`` takes
    a tokenizer saved with the Flamingo tokens as it is.
    """
    if mode not in TOKENIZER_MODES:
        raise ValueError(f"tokenizer mode: received {mode!r}; allowed: {TOKENIZER_MODES}")
    if str(spec) == TINY:
        if mode != "auto":
            raise ValueError(f"tokenizer {TINY!r} has mode 'auto' only; received {mode!r}")
        return build_tiny_tokenizer()
    sp_model = Path(spec) / SP_MODEL
    if mode != "auto" and sp_model.is_file():
        return build_llama_v1_tokenizer(sp_model, slow=mode == "llama_v1_slow",
                                        pad=pad or UNK_TOKEN)
    if mode == "llama_v1_slow":
        raise FileNotFoundError(f"{sp_model}: no such file (tokenizer mode {mode!r} reads it)")
    tok = AutoTokenizer.from_pretrained(str(spec), trust_remote_code=False, local_files_only=True)
    if MEDIA_TOKEN not in tok.get_vocab():
        if mode != "auto":
            raise FileNotFoundError(f"{sp_model}: no such file (tokenizer mode {mode!r} reads "
                                    f"it, or a tokenizer saved with the Flamingo tokens)")
        add_flamingo_tokens(tok, pad=pad or PAD_TOKEN)
    tok.padding_side = "left"
    return tok
