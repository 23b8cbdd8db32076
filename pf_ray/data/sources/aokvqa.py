"""A-OKVQA (``aokvqa_v1p0_train.json``, ``aokvqa_v1p0_val.json``).

Format, as released (allenai/aokvqa): a JSON array of ``{"split", "image_id",
"question_id", "question", "choices": [4 str], "correct_choice_idx", "direct_answers":
[10 str], "difficult_direct_answer", "rationales": [3 str]}``.

One ``multiple_choice`` row per question (the paper's rationale-VQA template, paper.md §4):
the user turn is the question with the choices appended (:func:`with_choices`), the raw
answer ``"Answer: {correct choice}. {first rationale}"``; all rationales, the direct
answers and the choice index are kept in ``meta``. The test split (no
``correct_choice_idx``) is rejected. Id: the question id.

Images: ``source.image_pattern`` over ``{split}`` (``train`` / ``val`` / ``test``) and
``{image_id}``; default ``{split}2017/{image_id:012d}.jpg`` (COCO 2017 under a COCO root).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import (
    RecordContext,
    choice_list,
    correct_index,
    id_field,
    pattern_image,
    sample,
    text_field,
)
from pf_ray.data.sources.readers import cached_reader, json_array
from pf_ray.data.sources.templates import answer_with_reason, with_choices
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{split}2017/{image_id:012d}.jpg"
SPLIT_IN_NAME = re.compile(r"aokvqa_v[\dp]+_([a-z]+)\.json$")


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = json_array(file, storage, "questions")
    found = SPLIT_IN_NAME.search(posixpath.basename(file))
    split = found.group(1) if found else None
    return [(pos, {"id": r.get("question_id"), "r": r, "split": split}
             if isinstance(r, dict) else r) for pos, r in enumerate(data)]


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "r" not in record:
        raise RecordError("bad_record", f"expected a question object, received "
                          f"{type(record).__name__}")
    r = record["r"]
    qid, image_id = id_field(r, "question_id"), id_field(r, "image_id")
    question = text_field(r, "question")
    choices = choice_list(r)
    idx = correct_index(r, "correct_choice_idx", len(choices))
    rationales = r.get("rationales")
    if not isinstance(rationales, list) or not rationales or not all(
            isinstance(x, str) and x.strip() for x in rationales):
        raise RecordError("bad_field", f"'rationales' must be a non-empty list of strings, "
                          f"received {rationales!r}"[:300])
    split = r.get("split") or record["split"]
    if not isinstance(split, str):
        raise RecordError("missing_field", "no 'split' in the record or the file name")
    return sample(ctx, task="multiple_choice",
                  image=pattern_image(ctx, split=split, image_id=image_id),
                  turns=[{"role": "user", "content": with_choices(question, choices)},
                         {"role": "assistant",
                          "content": answer_with_reason(choices[idx], rationales[0].strip())}],
                  meta={"question_id": qid, "image_id": image_id, "question": question,
                        "choices": choices, "answer_index": idx, "answer": choices[idx],
                        "rationales": rationales,
                        "direct_answers": r.get("direct_answers"),
                        "difficult_direct_answer": r.get("difficult_direct_answer")})


ADAPTER = Adapter("aokvqa", convert, "A-OKVQA: multiple-choice questions with rationales "
                  "(JSON array per split)", reader=cached_reader(_parse),
                  image_pattern=DEFAULT_PATTERN, pattern_fields=("split", "image_id"))
