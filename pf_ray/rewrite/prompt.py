"""What the rewriter reads: the (instruction, draft) of a sample, and its prompt per engine.

Which turn: the **first** assistant turn that follows a user turn, with the user turn
right before it as the instruction. Raw vision-language annotations are single-turn (one
question or request, one raw answer); for a multi-turn row the later turns are left out
(the row keeps one id, one rewrite).

The draft is the raw annotation; with ``draft_boxes`` a row's boxes are appended in the
serialisation the rewriter was trained on (captions, blank line, preamble, one
``label: [x1, y1, x2, y2]`` line per box; :func:`pf_ray.distort.boxes.serialise`), the
spec's "captions plus boxes where available". The row's ``original`` is that draft.

Prompts: ``flamingo`` encodes :func:`pf_ray.model.prompts.encode_rewrite` (token ids, the
images marked for the model's cross-attention mask); ``http`` ``completions`` sends the
same prompt as text (:func:`pf_ray.model.prompts.rewrite_text`, no ``<s>``: the server's
tokenizer adds BOS); ``chat`` sends a system message and a user message of image_url
parts + ``chat_prompt`` text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pf_ray.distort.boxes import serialise
from pf_ray.model.prompts import STOP_STRINGS, SYSTEM_MESSAGE
from pf_ray.model.tokenizer import ENDOFCHUNK_TOKEN, MEDIA_TOKEN

_MARKERS = re.compile(rf"\s*(?:{re.escape(MEDIA_TOKEN)}|{re.escape(ENDOFCHUNK_TOKEN)})+\s*")


def rewrite_stops(prompt_format: str) -> tuple[str, ...]:
    """Where a revised response ends besides EOS: the model starting a new turn (the
    released prompt's assistant header is spelt "Assistent")."""
    return STOP_STRINGS + (("\n### Assistent:",) if prompt_format == "released" else ())


def strip_markers(text: str) -> str:
    """The instruction without image markers (``<image>\\nWhat is...`` -> ``What is...``)."""
    return _MARKERS.sub(" ", text).strip()


def first_turn(turns: Sequence[dict[str, Any]]) -> tuple[int, str, str] | tuple[str, str]:
    """``(turn index, instruction, raw answer)``, or ``(reason, detail)`` for a bad row."""
    user: str | None = None
    for k, t in enumerate(turns or ()):
        if t.get("role") == "user":
            user = t.get("content") or ""
        elif t.get("role") == "assistant" and user is not None:
            instruction, answer = strip_markers(user), (t.get("content") or "").strip()
            if not instruction:
                return "no_instruction", f"the user turn before turn {k} has no text"
            if not answer:
                return "no_raw_answer", f"assistant turn {k} is empty"
            return k, instruction, answer
    if user is None:
        return "no_instruction", "no user turn"
    return "no_raw_answer", "no assistant turn after a user turn"


def draft_of(answer: str, boxes: Sequence[dict[str, Any]] | None, with_boxes: bool) -> str:
    """The raw annotation as the rewriter gets it (boxes appended when asked and present)."""
    if with_boxes and boxes:
        return serialise([answer], boxes)
    return answer


def chat_messages(instruction: str, draft: str, images: Sequence[str],
                  template: str) -> list[dict[str, Any]]:
    """OpenAI chat messages: the system message, then image_url parts + the request text."""
    text = re.sub(r"\{(instruction|draft)\}",
                  lambda m: instruction if m.group(1) == "instruction" else draft, template)
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}}
                                   for u in images]
    parts.append({"type": "text", "text": text})
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": parts}]
