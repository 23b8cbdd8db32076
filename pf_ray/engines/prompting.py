"""Prompting shared by every LLM user: chat messages, the Guanaco text format, stop strings.

A prompt is a list of chat messages (``{"role", "content"}``); when the last one is an
assistant message, it is a prefill that the model continues. ``prompt_format`` says how
messages become text: ``guanaco`` (the paper's ``### Human:`` / ``### Assistant:`` format,
used by Guanaco-33B and the released Polite Flamingo scripts) or ``chat_template`` (the
model tokenizer's own template).
"""

from __future__ import annotations

from collections.abc import Callable

Message = dict[str, str]

# Where a Guanaco-format continuation ends: a closing quote of a quoted prefill, or the
# next ``###`` speaker line.
DEFAULT_STOP = ('"', "###")


def guanaco_prompt(messages: list[Message]) -> str:
    """Render messages as the paper does: ``system\\n### Human: ...\\n### Assistant: ...``.

    The final assistant message is left open (no newline after it) for the model to continue.
    """
    parts = []
    for i, m in enumerate(messages):
        if m["role"] == "system":
            parts.append(m["content"] + "\n")
            continue
        speaker = "Human" if m["role"] == "user" else "Assistant"
        last = i == len(messages) - 1
        parts.append(f"### {speaker}: {m['content']}" + ("" if last else "\n"))
    return "".join(parts)


def cut_at_stop(text: str, stops: tuple[str, ...] = DEFAULT_STOP) -> str:
    """The generated text up to the first stop string (default: a closing quote or ``###``), stripped."""
    end = len(text)
    for stop in stops:
        pos = text.find(stop)
        if pos != -1:
            end = min(end, pos)
    return text[:end].strip()


def render(messages: list[Message], prompt_format: str,
           chat_template: Callable[[list[Message]], str] | None = None) -> str:
    """Messages -> prompt text in ``prompt_format`` (``guanaco`` or ``chat_template``)."""
    if prompt_format == "guanaco":
        return guanaco_prompt(messages)
    if chat_template is None:
        raise ValueError("prompt_format 'chat_template' needs a tokenizer with a chat template")
    return chat_template(messages)
