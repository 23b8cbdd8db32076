"""LLM-instructed distortion: prompt, output clean-up and output checks (paper.md §2).

The conversation given to the LLM (``build_messages``): the system message, the original
Human/Assistant turn, a Human turn asking for a compressed answer, and the prefilled
Assistant turn that ends with an opening quote.
``pf_ray.engines.prompting.guanaco_prompt`` renders it in the paper's ``### Human:`` /
``### Assistant:`` format; engines that prefer a model's own chat template render the same
messages with it (the last message is continued, not closed).
"""

from __future__ import annotations

import random
import re

from pf_ray.distort.styles import (
    PREFILL,
    STYLE_PROBABILITY,
    STYLES,
    SUMMARISE_REQUEST,
    SYSTEM_MESSAGE,
)
from pf_ray.engines.prompting import Message

REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i am unable|i'?m unable|"
    r"i'?m not able|as an ai\b)", re.IGNORECASE)


def pick_style(rng: random.Random) -> tuple[str | None, str]:
    """(style name or None, the sentence to insert): a style with probability 0.5."""
    if rng.random() < STYLE_PROBABILITY:
        return rng.choice(STYLES)
    return None, ""


def build_messages(instruction: str, original: str, distortion: str) -> list[Message]:
    """The distortion conversation; the last (assistant) message is to be continued."""
    return [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": original},
        {"role": "user", "content": SUMMARISE_REQUEST},
        {"role": "assistant", "content": PREFILL.format(distortion=distortion)},
    ]


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def check_output(original: str, distorted: str, *, reject_longer: bool = False) -> str | None:
    """Why a distortion is unusable (a reject reason), or None when it is fine.

    ``reject_longer`` (spec ``llm_reject_longer``, off by default) also rejects outputs
    longer than the original: the paper keeps them, since several of its styles
    (verbosity, repetition, irrelevant information) lengthen the text on purpose.
    """
    if not distorted.strip():
        return "llm_empty"
    if _norm(distorted) == _norm(original):
        return "llm_unchanged"
    if reject_longer and len(distorted) > len(original):
        return "llm_longer"
    if REFUSAL.match(distorted):
        return "llm_refusal"
    return None
