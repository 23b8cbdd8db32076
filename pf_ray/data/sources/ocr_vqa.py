"""OCR-VQA (``dataset.json`` + the ``images/`` folder ``loadDataset.py`` downloads).

Format, as released (ocr-vqa.github.io, Mishra et al. ICDAR 2019; verified against the
release's ``loadDataset.py`` and the loaders of mmpretrain ``datasets/ocr_vqa.py`` and
MiniGPT-v2): one JSON object keyed by the book's ASIN, ``{"<asin>": {"imageURL":
"http://ecx.images-amazon.com/images/I/61Y5cOdHJbL.jpg", "questions": [str],
"answers": [str], "title", "authorName", "genre", "genreID", "split": 1 | 2 | 3}}``
(1 train, 2 val, 3 test). ``loadDataset.py`` saves each cover as
``images/{asin}{ext}``, ``ext`` the extension of ``imageURL`` (``.jpg`` nearly always).

One ``vqa`` row per (book, question): the question as asked, the raw answer the answer at
the same position (the paper's plain-VQA template); title, author, genre in ``meta``.
Id: ``{asin}/{k}``, ``k`` the question's position in the book's list.

Splits: ``ocr_vqa`` reads the train books (``split`` 1, what LLaVA-1.5 and MiniGPT-v2
train on); ``ocr_vqa_val`` and ``ocr_vqa_test`` read splits 2 and 3 of the same file. Books
of other splits are not records of the source (skipped, not rejected); a book whose
``split`` is none of 1, 2, 3 is rejected by ``ocr_vqa`` (``bad_field``). A book whose
``questions`` and ``answers`` differ in length is rejected as a whole (``bad_record``, in
its question 0's id: which answer goes with which question is unknown); a blank question
or answer is rejected (``empty_text``); a number as answer (a few years) is kept as text.

Images: ``source.image_pattern`` over ``{asin}`` and ``{ext}``; default ``{asin}{ext}``
under the ``images/`` folder as ``image_root``.
"""

from __future__ import annotations

import posixpath
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pattern_image, sample
from pf_ray.data.sources.readers import RecordReader, cached_reader, load_json
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "{asin}{ext}"
SPLITS = {1: "train", 2: "val", 3: "test"}


def _parse_all(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """Every (book, question) of the file, each with its book's split."""
    data = load_json(file, storage)
    if not isinstance(data, dict):
        raise RecordError("unreadable_file", f"{file}: expected an object of ASIN -> book, "
                          f"received {type(data).__name__}")
    out: list[tuple[int, Any]] = []
    for asin, book in data.items():
        if not isinstance(book, dict):
            out.append((len(out), {"id": f"{asin}/0", "asin": asin, "book": book, "k": 0,
                                   "split": None}))
            continue
        questions, answers = book.get("questions"), book.get("answers")
        n = len(questions) if isinstance(questions, list) else 0
        if not isinstance(questions, list) or not isinstance(answers, list) or (
                len(answers) != n) or n == 0:
            n = 1  # the book is one reject, in its question 0
        for k in range(n):
            out.append((len(out), {"id": f"{asin}/{k}", "asin": asin, "book": book, "k": k,
                                   "split": book.get("split")}))
    return out


_all_records = cached_reader(_parse_all)


def split_reader(split: int) -> RecordReader:
    """The records of one split; books whose ``split`` is none of 1, 2, 3 go to the train
    adapter's records (once, not once per adapter), where the converter rejects them."""

    def reader(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
        return [(pos, r) for pos, r in _all_records(file, storage)
                if r["split"] == split or (split == 1 and r["split"] not in SPLITS)]

    return reader


def _text(value: Any, what: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RecordError("bad_field", f"{what} is {type(value).__name__}, not str")
    if not value.strip():
        raise RecordError("empty_text", f"{what} is blank")
    return value.strip()


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    asin, book, k = record["asin"], record["book"], record["k"]
    if not isinstance(book, dict):
        raise RecordError("bad_record", f"book {asin} is {type(book).__name__}, not an object")
    questions, answers = book.get("questions"), book.get("answers")
    if not isinstance(questions, list) or not isinstance(answers, list):
        raise RecordError("missing_field", f"book {asin}: 'questions' and 'answers' must be "
                          "lists")
    if len(questions) != len(answers) or not questions:
        raise RecordError("bad_record", f"book {asin}: {len(questions)} questions, "
                          f"{len(answers)} answers")
    if book.get("split") not in SPLITS:
        raise RecordError("bad_field", f"book {asin}: split {book.get('split')!r}; "
                          "expected 1 (train), 2 (val) or 3 (test)")
    url = book.get("imageURL")
    if not isinstance(url, str) or not url.strip():
        raise RecordError("missing_field", f"book {asin}: no 'imageURL' (the image's name "
                          "takes its extension)")
    ext = posixpath.splitext(url.strip())[1]
    question = _text(questions[k], f"question {k}")
    answer = _text(answers[k], f"answer {k}")
    return sample(ctx, task="vqa", image=pattern_image(ctx, asin=asin, ext=ext),
                  turns=[{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
                  meta={"asin": asin, "question_index": k, "answer": answer,
                        "split": SPLITS[book["split"]], "title": book.get("title"),
                        "author": book.get("authorName"), "genre": book.get("genre"),
                        "genre_id": book.get("genreID"), "image_url": url})


def _adapter(name: str, split: int) -> Adapter:
    return Adapter(name, convert, f"OCR-VQA book-cover questions, the {SPLITS[split]} split "
                   "of dataset.json", reader=split_reader(split), image_pattern=DEFAULT_PATTERN,
                   pattern_fields=("asin", "ext"))


ADAPTER = _adapter("ocr_vqa", 1)
VAL_ADAPTER = _adapter("ocr_vqa_val", 2)
TEST_ADAPTER = _adapter("ocr_vqa_test", 3)
