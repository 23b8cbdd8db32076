"""Random text augmentation: the 4-step chain of the paper (spec §2, README snippet).

Each step runs with probability 0.5, in order, all draws from one ``random.Random`` seeded
per row:

1. drop sentences: split on '.', keep a random prefix of 1..n pieces, join with ''
   (the periods are lost, as in the paper);
2. shuffle sentences: split on '.', shuffle, join with '' or '\\n';
3. character edits (nlpaug ``RandomCharAug`` semantics): action from insert / substitute /
   swap / delete, ``aug_char_p`` and ``aug_word_p`` each ~ U(0, 1);
4. word edits (nlpaug ``RandomWordAug`` semantics): action from delete / swap / crop,
   ``aug_p`` ~ U(0, 1).

nlpaug itself is not a dependency: these are re-implementations of its documented
behaviour (counts ``ceil(p * n)`` clipped to [1, 10], words shorter than 4 characters keep
their characters, adjacent swaps). Whitespace between words is preserved, so newlines
survive word edits.
"""

from __future__ import annotations

import math
import random
import re
import string

CHAR_ACTIONS = ("insert", "substitute", "swap", "delete")
WORD_ACTIONS = ("delete", "swap", "crop")
CANDIDATES = string.ascii_letters + string.digits
MIN_CHAR = 4  # nlpaug: words shorter than this are not character-augmented
AUG_MIN, AUG_MAX = 1, 10  # nlpaug defaults for words and for characters per word
_TOKENS = re.compile(r"(\s+)")


def aug_count(size: int, p: float, lo: int = AUG_MIN, hi: int = AUG_MAX) -> int:
    """How many of ``size`` items to augment: ceil(p * size) clipped to [lo, hi] and size."""
    if size <= 0:
        return 0
    return min(size, max(lo, min(hi, math.ceil(p * size))))


def drop_sentences(text: str, rng: random.Random) -> str:
    pieces = text.split(".")
    return "".join(pieces[: rng.randint(1, len(pieces))])


def shuffle_sentences(text: str, rng: random.Random) -> str:
    pieces = text.split(".")
    rng.shuffle(pieces)
    return rng.choice(("", "\n")).join(pieces)


def _edit_word(word: str, action: str, char_p: float, rng: random.Random) -> str:
    chars = list(word)
    n = aug_count(len(chars), char_p)
    positions = sorted(rng.sample(range(len(chars)), n), reverse=True)
    for pos in positions:
        if action == "insert":
            chars.insert(pos, rng.choice(CANDIDATES))
        elif action == "substitute":
            chars[pos] = rng.choice(CANDIDATES)
        elif action == "swap":
            other = pos + 1 if pos + 1 < len(chars) else pos - 1
            chars[pos], chars[other] = chars[other], chars[pos]
        else:  # delete (never the last character of a word)
            if len(chars) > 1:
                del chars[pos]
    return "".join(chars)


def char_edits(text: str, action: str, char_p: float, word_p: float,
               rng: random.Random) -> str:
    """Edit characters inside ``ceil(word_p * n)`` random words of at least 4 characters."""
    tokens = _TOKENS.split(text)  # words at even positions, whitespace at odd ones
    eligible = [i for i in range(0, len(tokens), 2) if len(tokens[i]) >= MIN_CHAR]
    for i in rng.sample(eligible, aug_count(len(eligible), word_p)):
        tokens[i] = _edit_word(tokens[i], action, char_p, rng)
    return "".join(tokens)


def word_edits(text: str, action: str, p: float, rng: random.Random) -> str:
    """Delete ``k`` random words, swap ``k`` adjacent pairs, or crop a span of ``k`` words."""
    tokens = _TOKENS.split(text)
    words = [i for i in range(0, len(tokens), 2) if tokens[i]]
    k = aug_count(len(words), p)
    if k == 0 or (action != "swap" and k >= len(words)):
        k = max(0, len(words) - 1) if action != "swap" else k
    if action == "delete":
        drop = set(rng.sample(words, k))
    elif action == "crop":
        start = rng.randint(0, len(words) - k) if k else 0
        drop = set(words[start:start + k])
    else:  # swap adjacent words k times
        values = [tokens[i] for i in words]
        for _ in range(k if len(values) > 1 else 0):
            j = rng.randrange(len(values) - 1)
            values[j], values[j + 1] = values[j + 1], values[j]
        for i, v in zip(words, values, strict=True):
            tokens[i] = v
        return "".join(tokens)
    out: list[str] = []
    for i in range(0, len(tokens), 2):
        if i in drop:
            continue
        if out and i > 0:
            out.append(tokens[i - 1])
        out.append(tokens[i])
    return "".join(out).strip()


def augment(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """Apply the 4-step chain; returns the text and the names of the steps applied."""
    ops: list[str] = []
    if rng.random() < 0.5:
        text = drop_sentences(text, rng)
        ops.append("drop")
    if rng.random() < 0.5:
        text = shuffle_sentences(text, rng)
        ops.append("shuffle")
    if rng.random() < 0.5:
        action = rng.choice(CHAR_ACTIONS)
        text = char_edits(text, action, rng.random(), rng.random(), rng)
        ops.append(f"char_{action}")
    if rng.random() < 0.5:
        action = rng.choice(WORD_ACTIONS)
        text = word_edits(text, action, rng.random(), rng)
        ops.append(f"word_{action}")
    return text, ops
