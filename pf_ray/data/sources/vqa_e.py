"""VQA-E (``VQA-E_train_set.json``, ``VQA-E_val_set.json``): VQA v2 questions with an
explanation of the answer (Li et al., ECCV 2018; Polite Flamingo's "VQA with rationale").

Format, as released (github.com/liqing-ustc/VQA-E, the annotation files on Google Drive;
verified against public loaders of those files, e.g. ones reading ``ann['img_id']``,
``ann['multiple_choice_answer']``, ``ann['answers']`` as strings, ``ann['answer_type']``
and ``ann['explanation'][0]``): a JSON array of ``{"img_id": int, "question",
"multiple_choice_answer", "answers": [10 str], "answer_type", "question_type",
"explanation": [text, score]}``. The records carry no question id.

One ``vqa`` row per record (the task the QA filters know; ``multiple_choice`` would claim
choices VQA-E has none of): the user turn is the question as asked, the raw answer
``"Answer: {multiple_choice_answer}. {explanation}"`` (:func:`answer_with_reason`, the
rationale-VQA template of A-OKVQA / ScienceQA). A record whose explanation is missing or
blank is rejected (``missing_rationale``): the rationale is the only thing VQA-E adds to its
VQA v2 question, which the ``vqav2`` source already ingests. ``meta`` keeps the answers,
the explanation's score, the question and answer types.

Id: ``{split}/{img_id}`` (``train`` / ``val`` from the file name); the several questions of
one image get the unit reader's ``#1``, ``#2``... suffixes in file order, so ids are stable
for the released file.

Images: COCO 2014, ``source.image_pattern`` over ``{split}`` (``train2014`` /
``val2014``) and ``{image_id}``; default ``{split}/COCO_{split}_{image_id:012d}.jpg``
under a COCO root (as ``vqav2``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, id_field, pattern_image, sample, text_field
from pf_ray.data.sources.readers import cached_reader, json_array
from pf_ray.data.sources.templates import answer_with_reason
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{split}/COCO_{split}_{image_id:012d}.jpg"
SPLIT_IN_NAME = re.compile(r"VQA-E_([a-z]+)_set", re.IGNORECASE)


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = json_array(file, storage, "questions")
    found = SPLIT_IN_NAME.search(posixpath.basename(file))
    if found is None:
        raise RecordError("unreadable_file", f"{file}: the split is read from the released "
                          "name VQA-E_{train,val}_set.json")
    split = found.group(1).lower()
    return [(pos, {"id": f"{split}/{r.get('img_id')}", "r": r, "split": split}
             if isinstance(r, dict) else r) for pos, r in enumerate(data)]


def explanation_of(r: dict[str, Any]) -> tuple[str, float | None]:
    """``(text, score)`` of a record's ``explanation`` (``[text, score]``; a bare string is
    taken as the text)."""
    value = r.get("explanation")
    score = None
    if isinstance(value, list):
        text = value[0] if value else None
        if len(value) > 1 and isinstance(value[1], int | float) and not isinstance(
                value[1], bool):
            score = float(value[1])
    else:
        text = value
    if text is None or (isinstance(text, str) and not text.strip()):
        raise RecordError("missing_rationale", "no explanation: the record would repeat its "
                          "VQA v2 question without the rationale VQA-E adds")
    if not isinstance(text, str):
        raise RecordError("bad_field", f"explanation text is {type(text).__name__}, not str")
    return text.strip(), score


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "r" not in record:
        raise RecordError("bad_record", f"expected a question object, received "
                          f"{type(record).__name__}")
    r = record["r"]
    image_id = id_field(r, "img_id")
    question = text_field(r, "question")
    answer = text_field(r, "multiple_choice_answer")
    explanation, score = explanation_of(r)
    answers = r.get("answers") or []
    if not isinstance(answers, list):
        raise RecordError("bad_field", f"'answers' is {type(answers).__name__}, not list")
    split = f"{record['split']}2014"
    return sample(ctx, task="vqa", image=pattern_image(ctx, split=split, image_id=image_id),
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant",
                          "content": answer_with_reason(answer, explanation)}],
                  meta={"image_id": image_id, "answer": answer, "answers": answers,
                        "explanation": explanation, "explanation_score": score,
                        "answer_type": r.get("answer_type"),
                        "question_type": r.get("question_type")})


ADAPTER = Adapter("vqa_e", convert, "VQA-E: VQA v2 questions with an explanation of the "
                  "answer (JSON array per split)", reader=cached_reader(_parse),
                  image_pattern=DEFAULT_PATTERN, pattern_fields=("split", "image_id"))
