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

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.fields import RecordContext, image_ref, sample
from pf_ray.data.sources.templates import DETAIL_PROMPTS
from pf_ray.data.sources.turns import conversations_of, normalise_turns, strip_image_tokens

TASK_OF_FILE = {"detail": "detail", "complex": "reasoning", "conversation": "conversation"}


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


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    turns, notes = normalise_turns(conversations_of(record))
    turns, placement = strip_image_tokens(turns)
    image = image_ref(record, ctx)
    task = (task_of_file(ctx.file) or task_of_turns(turns)) if image else "text_instruction"
    if placement:
        notes["image_placement"] = placement
    return sample(ctx, task=task, image=image, turns=turns, meta=notes)


ADAPTER = Adapter("llava_instruct", convert, "LLaVA-Instruct-150K conversations, detailed "
                  "descriptions and reasoning (JSON arrays)", key_prefix=key_prefix)
