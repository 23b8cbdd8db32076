"""Output checks: the rewriter's failure modes (paper.md §4) as reject reasons.

The paper names missing EOS (the model loops until its token budget), and the released v2
converter drops outputs ending in "...". A check returns the reason and a short detail, or
None. Order: ``empty_output``, ``repetition_loop`` (a loop usually also runs out of tokens:
the loop is the more telling reason), ``missing_eos``, ``ellipsis_ending``.
"""

from __future__ import annotations

import re

from pf_ray.rewrite.spec import ChecksConfig

REASONS = ("empty_output", "repetition_loop", "missing_eos", "ellipsis_ending")
_WORDS = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (each mark its own word)."""
    return _WORDS.findall(text.lower())


def tail_loop(text: str, *, min_repeats: int = 3, max_period: int = 32,
              min_words: int = 8) -> tuple[int, int] | None:
    """``(period, repeats)`` of a loop the text ends in, or None.

    A loop of period ``p``: the longest suffix in which every word equals the word ``p``
    later (the last repetition may be cut short, as a token budget cuts it). It counts when
    it spans at least ``min_repeats`` periods and ``min_words`` words. The shortest such
    period is reported.
    """
    w = words(text)
    n = len(w)
    for p in range(1, min(max_period, n // min_repeats) + 1):
        j = n - p - 1  # w[j] == w[j + p] for every j >= start
        while j >= 0 and w[j] == w[j + p]:
            j -= 1
        span = n - (j + 1)
        if span >= p * min_repeats and span >= min_words:
            return p, span // p
    return None


def check_output(text: str, finish_reason: str, cfg: ChecksConfig) -> tuple[str, str] | None:
    """Why a rewrite is unusable, ``(reason, detail)``, or None when it passes."""
    if cfg.empty_output and not text.strip():
        return "empty_output", f"no text (finish_reason {finish_reason})"
    if cfg.repetition_loop:
        loop = tail_loop(text, min_repeats=cfg.loop_min_repeats,
                         max_period=cfg.loop_max_period, min_words=cfg.loop_min_words)
        if loop is not None:
            return "repetition_loop", (f"ends in a span of {loop[0]} word(s) repeated "
                                       f"{loop[1]} times (finish_reason {finish_reason})")
    if cfg.missing_eos and finish_reason == "length":
        return "missing_eos", "stopped at decoding.max_new_tokens before EOS"
    if cfg.ellipsis_ending and text.rstrip().endswith(("...", "\u2026")):
        return "ellipsis_ending", "ends in an ellipsis"
    return None
