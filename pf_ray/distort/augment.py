"""Random text augmentation: the 4-step chain of the paper (paper.md §2, README snippet).

Each step runs with probability 0.5, in order, all draws from one ``random.Random`` seeded
per pair:

1. drop sentences: split on '.', keep a random prefix of 1..n pieces, join with ''
   (the periods are lost, as in the paper);
2. shuffle sentences: split on '.', shuffle, join with '' or '\\n';
3. character edits (nlpaug ``RandomCharAug``): action from insert / substitute / swap /
   delete, ``aug_char_p`` and ``aug_word_p`` each ~ U(0, 1);
4. word edits (nlpaug ``RandomWordAug``): action from delete / swap / crop,
   ``aug_p`` ~ U(0, 1).

nlpaug (1.1.11) is not a dependency; steps 3 and 4 re-implement its semantics:

* tokens: ``re.split(r"(\\W)")`` without blank pieces, so punctuation marks are tokens and
  whitespace (newlines included) is lost; output: tokens joined by single spaces, then
  nlpaug's detokeniser (no space before ``.,:;?!%``, none inside brackets), stripped;
* counts: ``ceil(p * tokens)`` clipped to [1, 10] (characters: per word, ``ceil(p * chars)``
  clipped to [1, 10]); character edits touch words of at least 4 characters, word delete
  and swap skip punctuation tokens, crop removes a contiguous run of any tokens;
* inserted and substituted characters come from nlpaug's pool: A-Z, a-z, 0-9 and
  ``!@#$%^&*()_+``; character swaps are adjacent and keep the case of each position;
* deleting or cropping the first token re-capitalises the second (nlpaug's alignment, which
  also keeps the second token); swapping with the first token moves the capital.

One deliberate difference: nlpaug's crop draws a direction and can wrap past the start of
the text (or fail on a 1-token crop); here the run is drawn uniformly among the runs that
fit. The random draws are this module's own, so outputs are not nlpaug's byte for byte.
"""

from __future__ import annotations

import math
import random
import re
import string

CHAR_ACTIONS = ("insert", "substitute", "swap", "delete")
WORD_ACTIONS = ("delete", "swap", "crop")
CANDIDATES = string.ascii_uppercase + string.ascii_lowercase + string.digits + "!@#$%^&*()_+"
MIN_CHAR = 4  # nlpaug: words shorter than this are not character-augmented
AUG_MIN, AUG_MAX = 1, 10  # nlpaug defaults for words and for characters per word
_SPLIT = re.compile(r"(\W)")
_DETOKENIZE = (
    (re.compile(r"\s([.,:;?!%]+)([ '\"`])"), r"\1\2"),  # end of sentence
    (re.compile(r"\s([.,:;?!%]+)$"), r"\1"),  # end of text
    (re.compile(r"\s([\[\(\{\<])\s"), r" \g<1>"),  # left bracket
    (re.compile(r"\s([\]\)\}\>])\s"), r"\g<1> "),  # right bracket
)


def tokenize(text: str) -> list[str]:
    """nlpaug's tokens: split on non-word characters, kept, blank pieces dropped."""
    return [t for t in _SPLIT.split(text) if t.strip()]


def detokenize(tokens: list[str]) -> str:
    """nlpaug's reverse: non-empty tokens joined by spaces, punctuation re-attached."""
    text = " ".join(t for t in tokens if t)
    for pattern, sub in _DETOKENIZE:
        text = pattern.sub(sub, text)
    return text.strip()


def aug_count(size: int, p: float, lo: int = AUG_MIN, hi: int = AUG_MAX) -> int:
    """How many of ``size`` items to augment: ceil(p * size) clipped to [lo, hi] and size."""
    if size <= 0:
        return 0
    return min(size, max(lo, min(hi, math.ceil(p * size))))


def word_case(word: str) -> str:
    """nlpaug's case label: empty, capitalize, upper, lower, mixed or unknown."""
    if not word:
        return "empty"
    if len(word) == 1 and word.isupper():
        return "capitalize"
    if word.isupper():
        return "upper"
    if word.islower():
        return "lower"
    if any(c.isupper() for c in word[1:]):
        return "mixed"
    return "capitalize" if word[0].isupper() else "unknown"


def align_case(src: str, dest: str) -> str:
    """``dest`` capitalised when it replaces a capitalised ``src`` and is lower case."""
    return dest.capitalize() if word_case(src) == "capitalize" and word_case(dest) == "lower" \
        else dest


def swap_position(pos: int, last: int, rng: random.Random) -> int:
    """An adjacent position: forced at either end, else left or right at random."""
    if pos == 0:
        return 1
    if pos == last:
        return pos - 1
    return pos + rng.choice((-1, 1))


def drop_sentences(text: str, rng: random.Random) -> str:
    pieces = text.split(".")
    return "".join(pieces[: rng.randint(1, len(pieces))])


def shuffle_sentences(text: str, rng: random.Random) -> str:
    pieces = text.split(".")
    rng.shuffle(pieces)
    return rng.choice(("", "\n")).join(pieces)


def _edit_word(word: str, action: str, char_p: float, rng: random.Random) -> str:
    chars = list(word)
    positions = rng.sample(range(len(chars)), aug_count(len(chars), char_p))
    if action == "substitute":
        for pos in positions:
            chars[pos] = rng.choice(CANDIDATES)
    elif action == "swap":
        for pos in positions:
            other = swap_position(pos, len(chars) - 1, rng)
            upper = chars[pos].isupper(), chars[other].isupper()
            chars[pos], chars[other] = chars[other], chars[pos]
            chars[pos] = chars[pos].upper() if upper[0] else chars[pos].lower()
            chars[other] = chars[other].upper() if upper[1] else chars[other].lower()
    else:  # insert / delete, from the last position back
        for pos in sorted(positions, reverse=True):
            if action == "insert":
                chars.insert(pos, rng.choice(CANDIDATES))
            else:
                del chars[pos]
    return "".join(chars)


def char_edits(text: str, action: str, char_p: float, word_p: float,
               rng: random.Random) -> str:
    """nlpaug ``RandomCharAug``: edit characters of ``ceil(word_p * tokens)`` words."""
    if not text.strip():
        return text.strip()
    tokens = tokenize(text)
    eligible = [i for i, t in enumerate(tokens) if len(t) >= MIN_CHAR]
    n = min(len(eligible), aug_count(len(tokens), word_p))
    for i in sorted(rng.sample(eligible, n)):
        tokens[i] = _edit_word(tokens[i], action, char_p, rng)
    return detokenize(tokens)


def _swap_words(tokens: list[str], i: int, j: int) -> None:
    """nlpaug's word swap: plain, except that the first token's capital stays first."""
    a, b = tokens[i], tokens[j]
    if i != 0 and j != 0:
        tokens[i], tokens[j] = b, a
        return
    if i == 0:
        tokens[0] = b.capitalize() if word_case(a) == "capitalize" and word_case(b) == "lower" \
            else b
        tokens[j] = a.lower() if word_case(a) == "capitalize" else a
    else:
        tokens[0] = a.capitalize() if word_case(a) == "lower" else a
        tokens[i] = b.lower() if word_case(b) == "capitalize" else b
    for k in (i, j):
        if tokens[k] == "i":
            tokens[k] = "I"


def word_edits(text: str, action: str, p: float, rng: random.Random) -> str:
    """nlpaug ``RandomWordAug``: delete or swap ``ceil(p * tokens)`` words, or crop a run
    of that many tokens. Texts of fewer than 2 tokens come back stripped, not edited."""
    tokens = tokenize(text)
    k = aug_count(len(tokens), p)
    if len(tokens) < 2 or k == 0:
        return text.strip()
    if action == "crop":
        start = rng.randint(0, len(tokens) - k)
        chosen = list(range(start, start + k))
    else:
        words = [i for i, t in enumerate(tokens) if t not in string.punctuation]
        chosen = rng.sample(words, min(k, len(words)))
        if not chosen:
            return text.strip()
    if action == "swap":
        for i in chosen:
            _swap_words(tokens, i, swap_position(i, len(tokens) - 1, rng))
        return detokenize(tokens)
    original = list(tokens)
    for i in sorted(chosen, reverse=True):
        tokens[i] = ""
        if i == 0:  # nlpaug re-aligns (and so keeps) the second token
            tokens[1] = align_case(original[0], original[1])
    return detokenize(tokens)


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


def augment_until_changed(text: str, rng: random.Random,
                          tries: int = 8) -> tuple[str, list[str]]:
    """The chain, drawn again (same RNG, so still seeded) while it leaves the text
    unchanged or empty (1 in 16 draws applies no step): an augment pair always differs
    from its original unless ``tries`` draws all fail (a text too short to edit)."""
    out, ops = text, []
    for _ in range(tries):
        out, ops = augment(text, rng)
        if out.strip() and out != text:
            break
    return out, ops
