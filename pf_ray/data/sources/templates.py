"""The paper's instruction templates for raw vision-language annotations (spec §4).

The raw annotation becomes the assistant turn (the rewriter later rewrites it); the user
turn comes from one of these templates. Choices that vary per sample (which of the 16
caption requests) are made from the record's key by :func:`~pf_ray.data.sources.base.pick`,
so a rerun writes the same bytes.
"""

from __future__ import annotations

import string

from pf_ray.data.sources.llava import DETAIL_PROMPTS

# Captions: one of LLaVA's 16 detailed-description requests (the paper's "16 LLaVA-style
# requests", e.g. "Describe the following image in detail").
CAPTION_PROMPTS: tuple[str, ...] = DETAIL_PROMPTS[:16]
assert len(CAPTION_PROMPTS) == 16 and CAPTION_PROMPTS[0].startswith("Describe the following")

# ELEVATER classification: "What is this?" -> CLIP's "a photo of a {class}."
CLASSIFY_PROMPT = "What is this?"
CLASS_ANSWER = "a photo of a {label}."

# RefCOCOg: the region is drawn onto the image (pf_ray.data.draw).
REGION_BOX_PROMPT = "Describe the object inside this green bounding box."


def with_choices(question: str, choices: list[str]) -> str:
    """Rationale VQA: the question with lettered choices appended, one per line::

        What is the man holding?
        Options:
        A. a kite
        B. a bat
    """
    lines = [f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(choices)]
    return question + "\nOptions:\n" + "\n".join(lines)


def answer_with_reason(answer: str, reason: str) -> str:
    """Rationale VQA raw text: ``"Answer: {a}. {rationale}"`` (no doubled full stop; a
    blank rationale leaves ``"Answer: {a}."``)."""
    return f"Answer: {answer.rstrip('.')}. {reason.strip()}".rstrip()
