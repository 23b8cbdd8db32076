"""What the rewriter reads: the (instruction, draft) of a sample, and its prompt per engine.

Which turn: the **first** assistant turn that follows a user turn, with the user turn
right before it as the instruction. Raw vision-language annotations are single-turn (one
question or request, one raw answer); for a multi-turn row the later turns are left out
(the row keeps one id, one rewrite).

The draft is the raw annotation; with ``draft_boxes`` a row's boxes are appended in the
serialisation the rewriter was trained on (captions, blank line, preamble, one
``label: [x1, y1, x2, y2]`` line per box; :func:`pf_ray.data.boxes.serialise`), the
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

from pf_ray.model.prompts import SYSTEM_MESSAGE


def chat_messages(instruction: str, draft: str, images: Sequence[str],
                  template: str) -> list[dict[str, Any]]:
    """OpenAI chat messages: the system message, then image_url parts + the request text."""
    text = re.sub(r"\{(instruction|draft)\}",
                  lambda m: instruction if m.group(1) == "instruction" else draft, template)
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}}
                                   for u in images]
    parts.append({"type": "text", "text": text})
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": parts}]
