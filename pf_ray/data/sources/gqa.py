"""GQA questions (``train_balanced_questions.json``, ``val_balanced_questions.json``,
``train_all_questions/train_all_questions_{0..9}.json``...).

Format, as released (cs.stanford.edu/people/dorarad/gqa): one JSON object mapping the
question id to ``{"imageId", "question", "answer", "fullAnswer", "types", "semantic",
"isBalanced", ...}``. One ``vqa`` row per question: the question as asked, the raw answer
is the short ``answer`` (the paper's plain-VQA template); ``fullAnswer`` and the question
types are kept in ``meta``. Questions without an answer (the test / challenge /
submission files) are rejected (``missing_field``). Id: the question id.

Images: ``source.image_pattern`` over ``{image_id}``; default ``{image_id}.jpg`` under the
released ``images/`` folder as ``image_root``.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, id_field, pattern_image, sample, text_field
from pf_ray.data.sources.readers import cached_reader, load_json
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{image_id}.jpg"


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = load_json(file, storage)
    if not isinstance(data, dict):
        raise RecordError("unreadable_file", f"{file}: expected an object of question id -> "
                          f"question, received {type(data).__name__}")
    return [(pos, {"id": qid, "q": q}) for pos, (qid, q) in enumerate(data.items())]


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    q = record["q"]
    if not isinstance(q, dict):
        raise RecordError("bad_record", f"question {record['id']} is {type(q).__name__}, "
                          "not an object")
    question, answer = text_field(q, "question"), text_field(q, "answer")
    image_id = id_field(q, "imageId")
    types = q.get("types") if isinstance(q.get("types"), dict) else {}
    return sample(ctx, task="vqa",
                  image=pattern_image(ctx, image_id=image_id),
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
                  meta={"question_id": record["id"], "image_id": image_id, "answer": answer,
                        "full_answer": q.get("fullAnswer"), "types": types,
                        "is_balanced": q.get("isBalanced")})


ADAPTER = Adapter("gqa", convert, "GQA questions (JSON object of question id -> question)",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("image_id",))
