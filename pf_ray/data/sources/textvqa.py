"""TextVQA (``TextVQA_0.5.1_train.json``, ``TextVQA_0.5.1_val.json``).

Format, as released (textvqa.org): ``{"dataset_type": "train", "dataset_name": "textvqa",
"dataset_version": "0.5.1", "data": [{"question", "image_id", "answers": [10 str],
"question_id", "set_name", "image_classes", "flickr_original_url", "image_width",
"image_height", ...}]}``.

One ``vqa`` row per question: the question as asked, the raw answer is the most frequent of
the 10 answers (ties: the first given), all of them in ``meta``. The test split (no
answers) is rejected. Id: the question id.

Images: ``source.image_pattern`` over ``{folder}`` (``train_images`` for train and val,
``test_images`` for test: the folders of the released zips), ``{split}`` and
``{image_id}``; default ``{folder}/{image_id}.jpg``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, id_field, pattern_image, sample, text_field
from pf_ray.data.sources.readers import cached_reader, json_field, load_json
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{folder}/{image_id}.jpg"


def image_fields(record: dict[str, Any], split: str | None) -> dict[str, Any]:
    """``{folder, split, image_id}`` of a TextVQA / TextCaps record."""
    split = record.get("set_name") or split or "train"
    return {"folder": "test_images" if split == "test" else "train_images", "split": split,
            "image_id": id_field(record, "image_id")}


def textvqa_data(file: str, storage: StorageConfig) -> tuple[list[Any], str | None]:
    """The ``data`` list of a TextVQA-family file and its ``dataset_type`` (split)."""
    data = load_json(file, storage)
    return json_field(data, "data", file), data.get("dataset_type")


def majority(answers: list[str]) -> str:
    """The most frequent answer; ties go to the one given first."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    rows, split = textvqa_data(file, storage)
    return [(pos, {"id": r.get("question_id"), "r": r, "split": split}
             if isinstance(r, dict) else r) for pos, r in enumerate(rows)]


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "r" not in record:
        raise RecordError("bad_record", f"expected a question object, received "
                          f"{type(record).__name__}")
    r = record["r"]
    qid = id_field(r, "question_id")
    question = text_field(r, "question")
    answers = r.get("answers")
    if answers is None:
        raise RecordError("missing_field", "no 'answers' (a test split has no answers)")
    if not isinstance(answers, list) or not answers or not all(
            isinstance(a, str) for a in answers):
        raise RecordError("bad_field", f"'answers' must be a list of strings, received "
                          f"{answers!r}"[:300])
    clean = [a.strip() for a in answers if a.strip()]
    if not clean:
        raise RecordError("empty_text", "every answer is blank")
    fields = image_fields(r, record["split"])
    answer = majority(clean)
    return sample(ctx, task="vqa", image=pattern_image(ctx, **fields),
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
                  meta={"question_id": qid, "image_id": fields["image_id"], "answer": answer,
                        "answers": answers, "split": fields["split"]})


ADAPTER = Adapter("textvqa", convert, "TextVQA questions, the majority answer",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("folder", "split", "image_id"))
