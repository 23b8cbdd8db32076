"""The rewriter's prompt for chat APIs (the rest of its prompt is the model's own format).

What the rewriter reads, the (instruction, draft) of a row, is
:func:`pf_ray.data.conversation.first_turn` and :func:`~pf_ray.data.conversation.draft_of`;
the prompt in each engine's form is built by :class:`pf_ray.rewrite.engines.Rewriter`. Chat
APIs get :func:`chat_text` (the spec's ``chat_prompt`` filled) after the image parts.
"""

from __future__ import annotations

import re


def chat_text(instruction: str, draft: str, template: str) -> str:
    """The chat APIs' user text: ``template`` with ``{instruction}`` and ``{draft}`` filled
    in one pass (braces inside them stay as they are)."""
    return re.sub(r"\{(instruction|draft)\}",
                  lambda m: instruction if m.group(1) == "instruction" else draft, template)
