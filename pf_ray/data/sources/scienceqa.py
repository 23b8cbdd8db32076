"""ScienceQA (``problems.json`` + the ``images/{split}/{pid}/image.png`` folders).

Format, as released (scienceqa.github.io, lupantech/ScienceQA ``data/scienceqa/``): one
JSON object mapping the problem id to ``{"question", "choices": [str], "answer": index,
"hint", "image": "image.png" | null, "task", "grade", "subject", "topic", "category",
"skill", "lecture", "solution", "split"}``.

One ``multiple_choice`` row per problem (the paper's rationale-VQA template, like A-OKVQA):
the user turn is ``Context: {hint}`` (when there is one), the question and the lettered
choices; the raw answer ``"Answer: {letter}. {solution}"``. Problems without an image are
text-only rows (``image`` null). Id: the problem id.

Images: ``source.image_pattern`` over ``{split}``, ``{pid}`` and ``{image}``; default
``{split}/{pid}/{image}`` under the ``images/`` folder as ``image_root``.
"""

from __future__ import annotations

import string
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import (
    RecordContext,
    choice_list,
    correct_index,
    pattern_image,
    sample,
    text_field,
)
from pf_ray.data.sources.readers import cached_reader, load_json
from pf_ray.data.sources.templates import answer_with_reason, with_choices
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{split}/{pid}/{image}"


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = load_json(file, storage)
    if not isinstance(data, dict):
        raise RecordError("unreadable_file", f"{file}: expected an object of problem id -> "
                          f"problem, received {type(data).__name__}")
    return [(pos, {"id": pid, "p": p}) for pos, (pid, p) in enumerate(data.items())]


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    p, pid = record["p"], record["id"]
    if not isinstance(p, dict):
        raise RecordError("bad_record", f"problem {pid} is {type(p).__name__}, not an object")
    question = text_field(p, "question")
    choices = choice_list(p)
    idx = correct_index(p, "answer", len(choices))
    hint = p.get("hint") or ""
    solution = p.get("solution") or ""
    if not isinstance(hint, str) or not isinstance(solution, str):
        raise RecordError("bad_field", "'hint' and 'solution' must be strings")
    prompt = with_choices(question, choices)
    if hint.strip():
        prompt = f"Context: {hint.strip()}\n{prompt}"
    image = None
    if p.get("image"):
        if not isinstance(p["image"], str):
            raise RecordError("bad_field", f"'image' is {type(p['image']).__name__}, not str")
        image = pattern_image(ctx, split=text_field(p, "split"), pid=pid,
                              image=p["image"])
    letter = string.ascii_uppercase[idx]
    return sample(ctx, task="multiple_choice", image=image,
                  turns=[{"role": "user", "content": prompt},
                         {"role": "assistant",
                          "content": answer_with_reason(letter, solution)}],
                  meta={"pid": pid, "choices": choices, "answer_index": idx,
                        "answer": choices[idx], "letter": letter, "hint": hint,
                        "lecture": p.get("lecture"), "split": p.get("split"),
                        **{k: p.get(k) for k in ("subject", "topic", "category", "skill",
                                                 "grade")}})


ADAPTER = Adapter("scienceqa", convert, "ScienceQA multiple-choice problems with solutions",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("split", "pid", "image"))
