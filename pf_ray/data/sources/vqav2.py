"""VQAv2 (and OK-VQA, same format): a questions file joined with its annotations file.

Files, as released (visualqa.org; okvqa.allenai.org):

* ``v2_OpenEnded_mscoco_{split}_questions.json`` (OK-VQA: ``OpenEnded_mscoco_{split}_
  questions.json``): ``{"data_subtype": "train2014", "questions": [{"image_id",
  "question", "question_id"}]}``; the source path names these.
* ``v2_mscoco_{split}_annotations.json`` (OK-VQA: ``mscoco_{split}_annotations.json``),
  found beside it by name: ``{"annotations": [{"question_id", "image_id", "answers":
  [{"answer", "answer_confidence", "answer_id"}], "multiple_choice_answer",
  "answer_type", "question_type"}]}``.

Joined by ``question_id``; one ``vqa`` row per question: the question as asked, the raw
answer is ``multiple_choice_answer`` (the most frequent of the 10), all answers in ``meta``.
A question without an annotation (the test splits ship none) is rejected
(``missing_annotation``). Id: the question id, unique across splits.

Images: ``source.image_pattern`` over ``{split}`` (the COCO image folder: ``train2014``,
``val2014``; ``test2015`` for test and test-dev) and ``{image_id}``; the default
``{split}/COCO_{split}_{image_id:012d}.jpg`` is COCO's own layout under a COCO root.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, id_field, pattern_image, sample, text_field
from pf_ray.data.sources.readers import cached_reader, json_field, load_json
from pf_ray.specs import StorageConfig
from pf_ray.storage import exists, resolve

DEFAULT_PATTERN = "{split}/COCO_{split}_{image_id:012d}.jpg"
SPLIT_IN_NAME = re.compile(r"mscoco_([A-Za-z-]+\d{4})_")


def annotations_path(questions_file: str) -> str:
    """``.../v2_OpenEnded_mscoco_val2014_questions.json`` -> ``.../v2_mscoco_val2014_
    annotations.json`` (OK-VQA's names lack the ``v2_``; the rule is the same)."""
    head, name = posixpath.split(questions_file)
    return posixpath.join(head, name.replace("OpenEnded_", "", 1)
                          .replace("_questions", "_annotations", 1))


def image_split(subtype: str) -> str:
    """The COCO image folder of a question split: test-dev2015 questions use test2015."""
    return "test2015" if subtype.startswith("test") else subtype


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = load_json(file, storage)
    questions = json_field(data, "questions", file)
    found = SPLIT_IN_NAME.search(posixpath.basename(file))
    subtype = data.get("data_subtype") or (found.group(1) if found else "")
    ann_file = annotations_path(file)
    fs, ann_path = resolve(ann_file, storage)
    answers: dict[Any, Any] | None = None
    if ann_file != file and exists(fs, ann_path):
        answers = {a.get("question_id"): a for a in
                   json_field(load_json(ann_file, storage), "annotations", ann_file)
                   if isinstance(a, dict)}
    out: list[tuple[int, Any]] = []
    for pos, q in enumerate(questions):
        if not isinstance(q, dict):
            out.append((pos, q))
            continue
        ann = answers.get(q.get("question_id")) if answers is not None else None
        out.append((pos, {"id": q.get("question_id"), "question": q, "annotation": ann,
                          "split": image_split(str(subtype)),
                          "annotations_file": posixpath.basename(ann_file)
                          if answers is not None else None}))
    return out


vqa_records = cached_reader(_parse)


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "question" not in record:
        raise RecordError("bad_record", f"expected a question object, received "
                          f"{type(record).__name__}")
    q = record["question"]
    qid, image_id = id_field(q, "question_id"), id_field(q, "image_id")
    question = text_field(q, "question")
    ann = record["annotation"]
    if ann is None:
        where = record["annotations_file"] or "no annotations file beside the questions"
        raise RecordError("missing_annotation", f"question {qid}: no annotation ({where})")
    if ann.get("image_id") not in (None, image_id):
        raise RecordError("bad_record", f"question {qid}: image_id {image_id} in the "
                          f"questions, {ann.get('image_id')} in the annotations")
    answer = text_field(ann, "multiple_choice_answer")
    all_answers = ann.get("answers") or []
    if not isinstance(all_answers, list):
        raise RecordError("bad_field", f"'answers' is {type(all_answers).__name__}, not list")
    image = pattern_image(ctx, split=record["split"], image_id=image_id)
    return sample(ctx, task="vqa", image=image,
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
                  meta={"question_id": qid, "image_id": image_id, "answer": answer,
                        "answers": [a.get("answer") for a in all_answers
                                    if isinstance(a, dict)],
                        "answer_type": ann.get("answer_type"),
                        "question_type": ann.get("question_type")})


ADAPTER = Adapter("vqav2", convert, "VQAv2 / OK-VQA: a questions file joined with its "
                  "annotations file", reader=vqa_records, image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("split", "image_id"))
