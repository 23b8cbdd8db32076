"""Conversation helpers: speakers and texts of a released conversation -> pf-ray turns.

Every text-instruction adapter goes through :func:`normalise_turns`, so the same record
problems (unknown speaker, blank text, no user or assistant turn) get the same reject
reasons whatever the release.
"""

from __future__ import annotations

import re
from typing import Any

from pf_ray.data.schema import ROLES
from pf_ray.data.sources.errors import RecordError

ROLE_ALIASES = {
    "human": "user", "user": "user", "usr": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "claude": "assistant", "bot": "assistant",
    "system": "system",
}
IMAGE_TOKEN = re.compile(r"\s*<image>\s*")

# How an Alpaca-style record's non-empty ``input`` joins its instruction into the user turn:
# the Clever Flamingo authors' converter for these sources (instruct_flamingo 942955a,
# instruction_dataset/alpaca_cot_to_instruction_v2.py) writes instruction + "\ninput: " + input.
INPUT_JOIN = "\ninput: "


def normalise_turns(turns: list[tuple[Any, Any]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Validate (speaker, text) pairs into pf-ray turns.

    Returns the turns and notes for ``meta``. Raises RecordError for an empty conversation,
    an unknown speaker, a non-string or blank text, or no user / no assistant turn. Leading
    assistant turns (a conversation that opens with the model) are dropped and noted.
    """
    if not turns:
        raise RecordError("empty_conversation", "no turns")
    out: list[dict[str, str]] = []
    notes: dict[str, Any] = {}
    for i, (speaker, text) in enumerate(turns):
        role = ROLE_ALIASES.get(str(speaker).strip().lower())
        if role is None:
            raise RecordError("unknown_role", f"turn {i}: speaker {speaker!r}; known: "
                              f"{sorted(ROLE_ALIASES)}")
        if not isinstance(text, str):
            raise RecordError("bad_field", f"turn {i}: text is {type(text).__name__}, not str")
        if not text.strip():
            raise RecordError("empty_text", f"turn {i} ({role}) is empty or whitespace")
        out.append({"role": role, "content": text})
    dropped = 0
    first = 1 if out and out[0]["role"] == "system" else 0
    while len(out) > first + 1 and out[first]["role"] == "assistant":
        out.pop(first)
        dropped += 1
    if dropped:
        notes["dropped_leading_assistant_turns"] = dropped
    roles = {t["role"] for t in out}
    if "user" not in roles:
        raise RecordError("no_user_turn", "conversation has no user turn")
    if "assistant" not in roles:
        raise RecordError("no_assistant_turn", "conversation has no assistant turn")
    assert all(t["role"] in ROLES for t in out)
    return out, notes


def conversations_of(record: Any) -> list[tuple[Any, Any]]:
    """(speaker, text) pairs of a LLaVA / ShareGPT record: ``conversations`` (or ``items``)
    of ``{"from", "value"}`` (or ``{"role", "content"}``) turns."""
    if not isinstance(record, dict):
        raise RecordError("bad_record", f"expected an object, received {type(record).__name__}")
    convs = record.get("conversations", record.get("items"))
    if convs is None:
        raise RecordError("missing_field", "no 'conversations' list")
    if not isinstance(convs, list):
        raise RecordError("bad_field", f"'conversations' is {type(convs).__name__}, not a list")
    pairs = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict):
            raise RecordError("bad_field", f"turn {i} is {type(turn).__name__}, not an object")
        pairs.append((turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))))
    return pairs


def instruction_turns(record: Any, answer_keys: tuple[str, ...] = ("output",)
                      ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """An Alpaca-style ``{instruction, input, <answer>}`` record -> one user/assistant pair.

    The first of ``answer_keys`` present holds the response. A record without any of them
    (an instruction-only release) is rejected as ``no_assistant_turn``; a blank instruction
    with an input uses the input alone. Instruction, input and response are stripped.
    """
    if not isinstance(record, dict):
        raise RecordError("bad_record", f"expected an object, received {type(record).__name__}")
    if "instruction" not in record:
        raise RecordError("missing_field", "no 'instruction'")
    fields: dict[str, str] = {}
    for k in ("instruction", "input"):
        value = record.get(k) or ""
        if not isinstance(value, str):
            raise RecordError("bad_field", f"{k!r} is {type(value).__name__}, not str")
        fields[k] = value.strip()
    answer_key = next((k for k in answer_keys if k in record), None)
    if answer_key is None:
        raise RecordError("no_assistant_turn", f"no {' / '.join(map(repr, answer_keys))}: an "
                          "instruction without a response")
    answer = record[answer_key]
    prompt = INPUT_JOIN.join(v for v in (fields["instruction"], fields["input"]) if v)
    turns, notes = normalise_turns([("user", prompt),
                                    ("assistant", answer.strip() if isinstance(answer, str)
                                     else answer)])
    if fields["input"]:
        notes["has_input"] = True
    return turns, notes


def strip_image_tokens(turns: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """Remove ``<image>`` markers; report where the first one sat ("before"/"after" text)."""
    placement = None
    for t in turns:
        if "<image>" in t["content"]:
            if placement is None:
                placement = "before" if t["content"].lstrip().startswith("<image>") else "after"
            t["content"] = IMAGE_TOKEN.sub("\n", t["content"]).strip()
            if not t["content"]:
                raise RecordError("empty_text", f"{t['role']} turn holds only <image>")
    return turns, placement
