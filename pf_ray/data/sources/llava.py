"""LLaVA-Instruct-150K (``llava_instruct_150k.json``, ``detail_23k.json``, ...).

Format: a JSON array of ``{"id", "image": "000000033471.jpg", "conversations":
[{"from": "human"|"gpt", "value": "..."}]}``. The ``<image>`` marker sits before or after
the first human text and is removed (its placement is kept in ``meta.image_placement``);
records without ``image`` are text-only samples. Image ids repeat across the files' tasks,
so a repeated id gets ``#n`` appended (see SourceReader.read).
"""

from __future__ import annotations

import posixpath
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


@register("llava_instruct")
def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    turns, notes = normalise_turns(conversations_of(record))
    turns, placement = strip_image_tokens(turns)
    image = image_ref(record, ctx)
    stem = posixpath.basename(ctx.file).split("_")[0]
    task = TASK_OF_FILE.get(stem, "llava_instruct") if image else "text_instruction"
    if placement:
        notes["image_placement"] = placement
    return sample(ctx, task=task, image=image, turns=turns, meta=notes)
