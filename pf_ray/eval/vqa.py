"""Answer accuracy on questions whose ground truth is known (the synthetic held-out set).

The synthetic data's ``vqa`` rows ask about the colour of a shape, the shape of a colour,
how many shapes there are, or whether a shape is present; ``meta`` keeps the short answer
(:mod:`pf_ray.data.synthetic`). A chat model answers in sentences ("The circle in the image
is red. It is a small shape..."), so an answer is scored by the first word of the
question's answer vocabulary it mentions (the first colour for a colour question, the
first number for a count, yes/no...), compared with the ground truth. An answer that
mentions none of them is wrong.

``blind=True`` asks the same questions with the images withheld: the prompt keeps its
``<image>`` marker but the pixels are all zeros, as the padding images of Clever Flamingo's
training (paper.md §6), so the prompt format is unchanged and only the visual information is
gone. This image-blind control shows how much of the accuracy the vision path brings
(chance level: 1/6 colours, 1/4 shapes, 1/2 yes/no).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pf_ray.data.images import ImageLoader
from pf_ray.data.synthetic import COLORS, NUMBERS, SHAPES
from pf_ray.specs import StorageConfig

# question type -> the words an answer is read for, and the canonical form of each
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(NUMBERS)} | {str(i): str(i) for i in range(10)}
VOCABULARY: dict[str, dict[str, str]] = {
    "color": {c: c for c in COLORS},
    "shape": {s: s for s in SHAPES},
    "count": _NUMBER_WORDS,
    "exists": {"yes": "yes", "no": "no"},
}


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str  # the ground truth, canonical (a colour, a shape, "3", "yes")
    type: str  # a key of VOCABULARY
    image: str | None = None
    image_bytes: bytes | None = None


def questions_from_rows(rows: list[dict[str, Any]], limit: int | None = None) -> list[Question]:
    """The ``vqa`` rows of a synthetic dataset with a known answer and type."""
    out = []
    for row in rows:
        meta = json.loads(row["meta"])
        qtype = meta.get("question_type")
        if row["task"] != "vqa" or qtype not in VOCABULARY or "answer" not in meta:
            continue
        user = next(t["content"] for t in row["conversations"] if t["role"] == "user")
        out.append(Question(row["id"], user, str(meta["answer"]), qtype, row.get("image"),
                            row.get("image_bytes")))
        if limit is not None and len(out) >= limit:
            break
    return out


def read_answer(text: str, qtype: str) -> str | None:
    """The canonical form of the first vocabulary word of ``qtype`` in ``text``, if any."""
    vocab = VOCABULARY[qtype]
    words = sorted(vocab, key=len, reverse=True)
    match = re.search(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", text.lower())
    return vocab[match.group(1)] if match else None


def is_correct(text: str, question: Question) -> bool:
    return read_answer(text, question.type) == question.answer


def answer_questions(model: Any, tokenizer: Any, questions: list[Question], *,
                     blind: bool = False, max_new_tokens: int = 40,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers of a chat model (Clever Flamingo format), with or without the images."""
    import torch

    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.flamingo import FlamingoGenerator
    from pf_ray.model.prompts import STOP_STRINGS, Turn, clean_response, encode_chat

    loader = ImageLoader(storage=StorageConfig())
    gen = FlamingoGenerator(model=model.eval(), tokenizer=tokenizer,
                            decoding=DecodingConfig(max_new_tokens=max_new_tokens))
    size = model.config.vision.image_size
    blank = torch.zeros(3, size, size)  # a preprocessed all-zero image (paper.md §6 padding)
    images = [[blank] if blind else [loader.load(q.image, q.image_bytes)] for q in questions]
    prompts = [encode_chat(tokenizer, [Turn(q.question, None, images=len(imgs))],
                           gen.mask_mode).input_ids
               for q, imgs in zip(questions, images, strict=True)]
    return [clean_response(r.text) for r in gen.generate_ids(prompts, images, STOP_STRINGS,
                                                           batch_size=batch_size)]


def answer_questions_vlm(generator: Any, questions: list[Question], *, blind: bool = False,
                         batch_size: int = 16) -> list[str]:
    """:func:`answer_questions` for an ``hf_vlm`` chat model (``generator``: an
    :class:`~pf_ray.engines.hf_vlm.HFVLMGenerator`); ``blind``: each image replaced by
    a black one of its size, so the prompt and its image tokens stay the same and only what
    the image shows is withheld."""
    from functools import partial

    from PIL import Image

    from pf_ray.engines.base import Prompt
    from pf_ray.model.hf_vlm.prompts import chat_messages
    from pf_ray.model.prompts import STOP_STRINGS, Turn, clean_response

    loader = ImageLoader(storage=StorageConfig())
    prompts = []
    for q in questions:
        image = loader.load(q.image, q.image_bytes)
        if blind:
            image = Image.new("RGB", image.size)
        prompts.append(Prompt(user=q.question, images=(image,), stops=STOP_STRINGS,
                              messages=partial(chat_messages, [Turn(q.question, None, 1)])))
    return [clean_response(r.text) for r in generator.generate(prompts, batch_size=batch_size)]


def accuracy(answers: list[str], questions: list[Question]) -> float:
    if not questions:
        return 0.0
    return sum(is_correct(a, q) for a, q in zip(answers, questions, strict=True)) / len(questions)
