"""Which assistant turns of a conversation become pairs, with which ids (paper.md §1).

``every_turn`` (the paper's count: 224k LLaVA pairs from 158k conversations) makes one pair
per assistant turn that follows a user turn, with id ``<sample id>#t<turn index>``; the
reader expands each sample into those rows (:func:`expand_turns`), each holding the
conversation up to its turn. ``one_turn`` keeps one row per sample (id = the sample id) and
draws the turn from the row's seeded RNG. :func:`locate` is the one place that decides
whether a (row, turn) is a usable pair: the pair steps and the plan-time target scan both
call it, so the scan counts exactly the pairs the steps will make.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pf_ray.data.boxes import serialise
from pf_ray.data.io import read_shard_columns
from pf_ray.data.schema import Batch
from pf_ray.specs import StorageConfig
from pf_ray.storage import resolve

Turns = list[dict[str, str]]


def row_seed(seed: int, pair_id: str) -> int:
    """A 63-bit seed from the job seed and the pair id (the sample id for ``one_turn``)."""
    digest = hashlib.blake2b(f"{seed}:{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def pair_id(sample_id: str, turn: int) -> str:
    return f"{sample_id}#t{turn}"


def candidate_turns(turns: Turns) -> list[int]:
    """Indices of the assistant turns that follow a user turn."""
    out, seen_user = [], False
    for k, t in enumerate(turns):
        if t["role"] == "assistant" and seen_user:
            out.append(k)
        elif t["role"] == "user":
            seen_user = True
    return out


def expand_turns(batch: Batch) -> Batch:
    """One row per candidate turn (``turn`` set, id ``<id>#t<turn>``, the conversation up
    to that turn); a sample without one stays a single row with ``turn`` None."""
    out: Batch = {k: [] for k in batch}
    out["turn"] = []
    for i, sid in enumerate(batch["id"]):
        turns = batch["conversations"][i] or []
        for k in candidate_turns(turns) or [None]:
            for col, values in batch.items():
                out[col].append(values[i])
            out["turn"].append(k)
            if k is not None:
                out["id"][-1] = pair_id(sid, k)
                out["conversations"][-1] = turns[:k + 1]
    return out


def read_pairs(file: str, storage: dict[str, Any], pairs: str,
               columns: tuple[str, ...]) -> Batch:
    """``columns`` of one shard file, one row per pair candidate (see the module doc)."""
    fs, path = resolve(file, StorageConfig(**storage))
    batch = read_shard_columns(fs, path, columns)
    if pairs == "every_turn":
        return expand_turns(batch)
    batch["turn"] = [None] * len(batch["id"])
    return batch


@dataclass(frozen=True)
class Located:
    """A usable pair: its turn, texts and seed (``drawn``: the RNG after the turn draw)."""

    turn: int
    instruction: str
    original: str
    seed: int
    drawn: random.Random | None = None

    def rng(self) -> random.Random:
        """The pair's RNG for its next choices (family, style)."""
        return self.drawn if self.drawn is not None else random.Random(self.seed)


@dataclass(frozen=True)
class Unusable:
    reason: str
    detail: str


def locate(pid: str, turns: Turns, turn: int | None, seed: int,
           max_chars: int) -> Located | Unusable:
    """The pair of row ``pid``: its own ``turn``, or (None) a seeded draw among the turns."""
    candidates = candidate_turns(turns)
    if not candidates:
        return Unusable("no_assistant_turn", "no assistant turn after a user turn")
    s = row_seed(seed, pid)
    drawn: random.Random | None = None
    if turn is None:  # one_turn: the turn is the row's first draw
        drawn = random.Random(s)
        k = drawn.choice(candidates)
    else:
        k = turn
    original = turns[k]["content"]
    instruction = next(t["content"] for t in reversed(turns[:k]) if t["role"] == "user")
    if not original.strip() or not instruction.strip():
        return Unusable("empty_text", f"turn {k} or its instruction is empty")
    if len(original) > max_chars:
        return Unusable("text_too_long", f"{len(original)} characters > max_chars {max_chars}")
    return Located(k, instruction, original, s, drawn)


# ------------------------------------------------------------------ the first turn

# The image markers of pf-ray's prompts (:mod:`pf_ray.model.tokenizer` adds them to the
# tokenizer): an instruction's text is compared and shown without them.
MEDIA_TOKEN = "<image>"
ENDOFCHUNK_TOKEN = "<|endofchunk|>"
_MARKERS = re.compile(rf"\s*(?:{re.escape(MEDIA_TOKEN)}|{re.escape(ENDOFCHUNK_TOKEN)})+\s*")


def strip_markers(text: str) -> str:
    """The instruction without image markers (``<image>\\nWhat is...`` -> ``What is...``)."""
    return _MARKERS.sub(" ", text).strip()


def first_turn(turns: Sequence[dict[str, Any]]) -> tuple[int, str, str] | tuple[str, str]:
    """``(turn index, instruction, raw answer)``, or ``(reason, detail)`` for a bad row."""
    user: str | None = None
    for k, t in enumerate(turns or ()):
        if t.get("role") == "user":
            user = t.get("content") or ""
        elif t.get("role") == "assistant" and user is not None:
            instruction, answer = strip_markers(user), (t.get("content") or "").strip()
            if not instruction:
                return "no_instruction", f"the user turn before turn {k} has no text"
            if not answer:
                return "no_raw_answer", f"assistant turn {k} is empty"
            return k, instruction, answer
    if user is None:
        return "no_instruction", "no user turn"
    return "no_raw_answer", "no assistant turn after a user turn"


def draft_of(answer: str, boxes: Sequence[dict[str, Any]] | None, with_boxes: bool) -> str:
    """The raw annotation as the rewriter gets it (boxes appended when asked and present)."""
    if with_boxes and boxes:
        return serialise([answer], boxes)
    return answer
