"""LLaVA-Instruct-150K (``conversation_58k.json``, ``detail_23k.json``,
``complex_reasoning_77k.json``, or the merged ``llava_instruct_150k.json``).

Format: a JSON array of ``{"id", "image": "000000033471.jpg", "conversations":
[{"from": "human"|"gpt", "value": "..."}]}``. The ``<image>`` marker sits before or after
the first human text and is removed (its placement is kept in ``meta.image_placement``);
records without ``image`` are text-only samples.

Task: a per-task file gives its task by name (``detail_23k.json`` -> ``detail``,
``complex_reasoning_77k.json`` -> ``reasoning``, ``conversation_58k.json`` ->
``conversation``). Any other file (the merged ``llava_instruct_150k.json`` mixes the three)
gives it by shape: more than one human turn -> ``conversation``; one human turn asking for
a detailed description (:data:`DETAIL_PROMPTS`) -> ``detail``; any other single turn ->
``reasoning``.

Ids: the ids are COCO image ids, shared by an image's rows in each task. Within a file a
repeated id gets ``#n`` appended (see SourceReader.read); a per-task file's keys are
prefixed by its task (``detail/000000033471``), so one source can read the three files.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pf_ray.data.sources.base import (
    RecordContext,
    RecordError,
    image_ref,
    normalise_turns,
    register,
    sample,
    strip_image_tokens,
)

TASK_OF_FILE = {"detail": "detail", "complex": "reasoning", "conversation": "conversation"}

# The requests of LLaVA's detailed descriptions: the 16 of the LLaVA paper's list (its
# `detail_describe_instructions`) and those the released detail_23k.json actually uses.
DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
    # detail_23k.json's own wording
    "What do you see happening in this image?",
    "What's happening in the scene?",
    "What is this photo about'?",
    "Can you elaborate on the elements of the picture provided?",
    "What are the key elements in this picture?",
    "What do you think is going on in this snapshot?",
    "Explain the visual content of the image in great detail.",
    "Can you describe the main features of this image for me?",
    "Write a detailed description of the given image.",
    "Describe the following image.",
)


def prompt_key(text: str) -> str:
    """Case, spacing and trailing punctuation/quotes do not matter when matching prompts."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".?!'\" ").lower()


DETAIL_KEYS = frozenset(prompt_key(p) for p in DETAIL_PROMPTS)


def task_of_file(file: str) -> str | None:
    return TASK_OF_FILE.get(posixpath.basename(file).split("_")[0])


def task_of_turns(turns: list[dict[str, str]]) -> str:
    """The LLaVA task of a conversation from its shape (for files that mix the tasks)."""
    users = [t["content"] for t in turns if t["role"] == "user"]
    if len(users) > 1:
        return "conversation"
    return "detail" if prompt_key(users[0]) in DETAIL_KEYS else "reasoning"


def key_prefix(file: str) -> str:
    task = task_of_file(file)
    return f"{task}/" if task else ""


def conversations_of(record: Any) -> list[tuple[Any, Any]]:
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


@register("llava_instruct", key_prefix=key_prefix)
def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    turns, notes = normalise_turns(conversations_of(record))
    turns, placement = strip_image_tokens(turns)
    image = image_ref(record, ctx)
    task = (task_of_file(ctx.file) or task_of_turns(turns)) if image else "text_instruction"
    if placement:
        notes["image_placement"] = placement
    return sample(ctx, task=task, image=image, turns=turns, meta=notes)
