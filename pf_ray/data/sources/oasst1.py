"""OpenAssistant Conversations (OASST1), one sample per message tree: its best-ranked path.

Read forms (``.jsonl``, or ``.jsonl.gz`` as released: the storage layer decompresses by
extension; the HF ``OpenAssistant/oasst1`` parquet files too):

- **Message trees** (``2023-04-12_oasst_ready.trees.jsonl.gz``): one tree per line,
  ``{"message_tree_id", "tree_state", "prompt": {message}}``; a message has
  ``message_id``, ``text``, ``role`` ("prompter" / "assistant"), ``lang``, ``rank``
  (0 = best among its siblings, null when unranked), ``deleted``, ``review_result`` and
  ``replies: [message...]``.
- **Flat messages** (``*.messages.jsonl.gz``, the HF parquet rows): one message per line
  with ``parent_id`` and ``message_tree_id``; regrouped into trees (replies in file order).
- **Conversation threads** (``{"thread_id", "thread": [message...]}``): taken as they are.

The path starts at the prompt and at each step follows the reply with the lowest non-null
``rank`` (the first reply when none is ranked), skipping replies that are ``deleted`` or
failed review (``review_result: false``); trailing prompter turns are dropped so the
sample ends on an assistant turn (the selection of openassistant-guanaco, one path per
tree). All languages are kept, as the paper used OASST1 as released; ``meta.lang`` is the
prompt's language. Rejects: ``tree_not_ready`` (a ``tree_state`` other than
``ready_for_export``, e.g. in the ``oasst_all`` export), ``message_removed`` (the prompt is
deleted or failed review), ``missing_field`` (no prompt), plus the usual turn checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, sample
from pf_ray.data.sources.readers import json_records, parquet_records
from pf_ray.data.sources.turns import normalise_turns
from pf_ray.specs import StorageConfig

READY = "ready_for_export"


def _load(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    if file.endswith(".parquet"):
        return parquet_records(file, storage)
    return json_records(file, storage)


def _is_flat_message(record: Any) -> bool:
    return isinstance(record, dict) and "message_id" in record and "prompt" not in record


def trees_of_messages(messages: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Flat messages -> ``{"message_tree_id", "tree_state", "prompt"}`` trees, in the order
    each tree first appears; replies keep file order. A tree whose prompt is absent from
    the file gets ``prompt: None``."""
    nodes = {m["message_id"]: {**m, "replies": []} for m in messages}

    def root_id(m: dict[str, Any]) -> str:  # when a message does not name its tree
        for _ in range(len(nodes)):  # (bounded: a malformed file may hold a cycle)
            if m.get("parent_id") not in nodes:
                break
            m = nodes[m["parent_id"]]
        return m["message_id"]

    trees: dict[str, dict[str, Any]] = {}
    for m in messages:
        node = nodes[m["message_id"]]
        tree_id = m.get("message_tree_id") or root_id(m)
        tree = trees.setdefault(tree_id, {"id": tree_id, "message_tree_id": tree_id,
                                          "tree_state": m.get("tree_state"), "prompt": None})
        parent = m.get("parent_id")
        if parent is None:
            tree["prompt"] = node
        elif parent in nodes:
            nodes[parent]["replies"].append(node)
    yield from trees.values()


@lru_cache(maxsize=1)  # every unit of a file reads the whole file: parse it once per worker
def _records(file: str, storage_json: str) -> tuple[tuple[int, Any], ...]:
    records = _load(file, StorageConfig.model_validate_json(storage_json))
    flat = [r for _, r in records if _is_flat_message(r)]
    if not flat:  # trees or threads: one record per line; the tree id is the key
        return tuple((pos, {**r, "id": r.get("message_tree_id", r.get("thread_id"))}
                      if isinstance(r, dict) else r) for pos, r in records)
    bad = [(pos, r) for pos, r in records if not _is_flat_message(r)]  # e.g. invalid lines
    return tuple(bad + [(len(records) + k, t) for k, t in enumerate(trees_of_messages(flat))])


def oasst_records(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    return list(_records(file, storage.model_dump_json()))


def _usable(message: Any) -> bool:
    return isinstance(message, dict) and not message.get("deleted") \
        and message.get("review_result") is not False


def best_path(prompt: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt, then at each step the usable reply of lowest non-null rank (else the
    first usable reply), down to a leaf."""
    path = [prompt]
    while True:
        replies = [r for r in path[-1].get("replies") or [] if _usable(r)]
        if not replies:
            return path
        ranked = [r for r in replies if r.get("rank") is not None]
        path.append(min(ranked, key=lambda r: r["rank"]) if ranked else replies[0])


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordError("bad_record", f"expected an object, received {type(record).__name__}")
    if "thread" in record:
        path = record["thread"]
        if not isinstance(path, list) or not all(isinstance(m, dict) for m in path):
            raise RecordError("bad_field", "'thread' must be a list of messages")
    else:
        state = record.get("tree_state")
        if state not in (None, READY):
            raise RecordError("tree_not_ready", f"tree_state is {state!r}, not {READY!r}")
        prompt = record.get("prompt")
        if prompt is None:
            raise RecordError("missing_field", "no 'prompt' message")
        if not isinstance(prompt, dict):
            raise RecordError("bad_field", f"'prompt' is {type(prompt).__name__}, not an object")
        if not _usable(prompt):
            raise RecordError("message_removed", "the prompt is deleted or failed review")
        path = best_path(prompt)
    while len(path) > 1 and path[-1].get("role") == "prompter":  # end on an assistant turn
        path = path[:-1]
    turns, notes = normalise_turns([(m.get("role"), m.get("text")) for m in path])
    lang = path[0].get("lang") if path else None
    return sample(ctx, task="text_instruction", image=None, turns=turns,
                  meta={**notes, "lang": lang, "message_ids": [m.get("message_id") for m in path],
                        "message_tree_id": record.get("message_tree_id")})


ADAPTER = Adapter("oasst1", convert, "OpenAssistant Conversations (OASST1): the best-ranked "
                  "path of each message tree", reader=oasst_records)
