"""CLEVR questions (``CLEVR_train_questions.json``, ``CLEVR_val_questions.json``...).

Format, as released (cs.stanford.edu/people/jcjohns/clevr, CLEVR_v1.0/questions/):
``{"info": {"split", ...}, "questions": [{"image_index", "image_filename":
"CLEVR_val_000000.png", "question_index", "question", "answer", "question_family_index",
"program", "split"}]}``.

One ``vqa`` row per question: the question as asked, the raw answer the short ``answer``.
The test split ships no answers: its questions are rejected (``missing_field``). Id:
``{split}/{question_index}`` (indices restart in each split).

Images: ``source.image_pattern`` over ``{split}`` and ``{image_filename}``; default
``{split}/{image_filename}`` under ``CLEVR_v1.0/images``.
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

DEFAULT_PATTERN = "{split}/{image_filename}"
SPLIT_IN_NAME = re.compile(r"CLEVR_([A-Za-z]+)_questions")


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = load_json(file, storage)
    questions = json_field(data, "questions", file)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    found = SPLIT_IN_NAME.search(posixpath.basename(file))
    file_split = info.get("split") or (found.group(1) if found else None)
    out: list[tuple[int, Any]] = []
    for pos, q in enumerate(questions):
        if not isinstance(q, dict):
            out.append((pos, q))
            continue
        split = q.get("split") or file_split
        index = q.get("question_index", pos)
        out.append((pos, {"id": f"{split}/{index}", "q": q, "split": split}))
    return out


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "q" not in record:
        raise RecordError("bad_record", f"expected a question object, received "
                          f"{type(record).__name__}")
    q = record["q"]
    question = text_field(q, "question")
    if q.get("answer") is None:
        raise RecordError("missing_field", "no 'answer' (the test split has no answers)")
    answer = text_field(q, "answer")
    filename = text_field(q, "image_filename")
    split = record["split"]
    if not isinstance(split, str):
        raise RecordError("missing_field", "no 'split' in the question, info or file name")
    return sample(ctx, task="vqa",
                  image=pattern_image(ctx, split=split,
                                      image_filename=filename),
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
                  meta={"answer": answer, "split": split, "image_index": q.get("image_index"),
                        "question_index": id_field(q, "question_index"),
                        "question_family_index": q.get("question_family_index")})


ADAPTER = Adapter("clevr", convert, "CLEVR questions: synthetic-scene VQA (JSON object per split)",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("split", "image_filename"))
