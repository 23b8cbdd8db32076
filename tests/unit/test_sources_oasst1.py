"""The OASST1 adapter on files in OpenAssistant's export formats: message trees (JSON Lines,
gzipped as released), flat messages (JSON Lines and the HF parquet rows) and threads."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pf_ray.data.sources import SourceReader
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_REASON, Batch

TREE_ID = "14fbb664-a620-45ce-bee4-7c519b16a793"


def msg(mid: str, role: str, text: str, rank: int | None = None, replies: list[Any] = (),
        **extra: Any) -> dict[str, Any]:
    """An export message node (the fields of oasst_data's ExportMessageNode that matter)."""
    return {"message_id": mid, "user_id": "u", "text": text, "role": role, "lang": "en",
            "review_count": 3, "review_result": True, "deleted": False, "rank": rank,
            "synthetic": False, "model_name": None, "emojis": {"+1": 2}, "labels": None,
            "replies": list(replies), **extra}


# The README's "divide by 0" tree: ranked assistant replies, a ranked follow-up, and a
# second-level choice where the best-ranked reply was deleted.
TREE: dict[str, Any] = {
    "message_tree_id": TREE_ID, "tree_state": "ready_for_export", "origin": None,
    "prompt": msg(TREE_ID, "prompter", "Why can't we divide by 0?", replies=[
        msg("a1", "assistant", "Dividing by zero is undefined because...", rank=1, replies=[
            msg("p1", "prompter", "Math is confusing.", rank=0, replies=[
                msg("a11", "assistant", "Irrational numbers are simply...", rank=0)])]),
        msg("a2", "assistant", "The reason we cannot divide by zero is...", rank=0, replies=[
            msg("p2", "prompter", "Can you explain why we created a definition?", rank=None,
                replies=[
                    msg("a21", "assistant", "(deleted) The square root of -1...", rank=0,
                        deleted=True),
                    msg("a22", "assistant", "(spam) buy now", rank=1, review_result=False),
                    msg("a23", "assistant", "The historical origin of the imaginary...",
                        rank=2),
                    msg("a24", "assistant", "Unranked reply.", rank=None)]),
            msg("p3", "prompter", "A second, unranked follow-up.", rank=None)]),
        msg("a3", "assistant", "Unranked.", rank=None)]),
}
BEST = [("user", "Why can't we divide by 0?"),
        ("assistant", "The reason we cannot divide by zero is..."),
        ("user", "Can you explain why we created a definition?"),
        ("assistant", "The historical origin of the imaginary...")]
BEST_IDS = [TREE_ID, "a2", "p2", "a23"]


def tree(tid: str, prompt: dict[str, Any] | None, state: str = "ready_for_export"
         ) -> dict[str, Any]:
    return {"message_tree_id": tid, "tree_state": state, "prompt": prompt}


def flatten(t: dict[str, Any]) -> list[dict[str, Any]]:
    """What oasst-data's tree_to_messages writes: depth-first, with parent and tree ids."""
    out: list[dict[str, Any]] = []

    def visit(node: dict[str, Any], parent: str | None) -> None:
        flat = {k: v for k, v in node.items() if k != "replies"}
        out.append({**flat, "parent_id": parent, "message_tree_id": t["message_tree_id"],
                    "tree_state": t["tree_state"]})
        for r in node["replies"]:
            visit(r, node["message_id"])

    visit(t["prompt"], None)
    return out


def write_jsonl(path: Path, lines: list[Any], gz: bool = False) -> str:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return str(path)


def read(file: str) -> Batch:
    b = SourceReader("oasst1", "oasst1", None, StorageConfig()).read(file, 0, 10**9)
    assert len(set(b["id"])) == len(b["id"])
    return b


def pairs(b: Batch, i: int) -> list[tuple[str, str]]:
    return [(t["role"], t["content"]) for t in b["conversations"][i]]


def test_trees_best_ranked_path(tmp_path: Path) -> None:
    b = read(write_jsonl(tmp_path / "2023-04-12_oasst_ready.trees.jsonl.gz", [TREE], gz=True))
    assert b["id"] == [f"oasst1:{TREE_ID}"]
    assert b[REJECT_REASON] == [None]
    assert b["task"] == ["text_instruction"] and b["image"] == [None]
    assert pairs(b, 0) == BEST
    meta = json.loads(b["meta"][0])
    assert meta["lang"] == "en" and meta["message_tree_id"] == TREE_ID
    assert meta["message_ids"] == BEST_IDS


def test_unranked_replies_take_the_first_and_path_ends_on_assistant(tmp_path: Path) -> None:
    t = tree("t2", msg("t2", "prompter", "Hola, ¿qué tal?", lang="es", replies=[
        msg("x1", "assistant", "Bien, ¿y tú?", replies=[
            msg("x2", "prompter", "Muy bien.")]),  # no answer: dropped
        msg("y1", "assistant", "Second reply.")]))
    t["prompt"]["lang"] = "es"
    b = read(write_jsonl(tmp_path / "trees.jsonl", [t]))
    assert pairs(b, 0) == [("user", "Hola, ¿qué tal?"), ("assistant", "Bien, ¿y tú?")]
    assert json.loads(b["meta"][0])["lang"] == "es"  # every language is kept


def test_tree_rejects(tmp_path: Path) -> None:
    lines: list[Any] = [
        tree("s", msg("s", "prompter", "Spam prompt", review_result=False,
                      replies=[msg("s1", "assistant", "ok")])),
        tree("d", msg("d", "prompter", "Deleted", deleted=True,
                      replies=[msg("d1", "assistant", "ok")])),
        tree("g", msg("g", "prompter", "Growing", replies=[msg("g1", "assistant", "ok")]),
             state="aborted_low_grade"),
        tree("n", msg("n", "prompter", "No answer yet")),
        tree("r", msg("r", "prompter", "Only removed answers",
                      replies=[msg("r1", "assistant", "x", deleted=True)])),
        tree("e", msg("e", "prompter", "   ", replies=[msg("e1", "assistant", "ok")])),
        tree("m", None),
        {"message_tree_id": "b", "tree_state": "ready_for_export", "prompt": "text"},
        "{not json",
        TREE,
    ]
    b = read(write_jsonl(tmp_path / "2023-04-12_oasst_all.trees.jsonl", lines))
    assert b[REJECT_REASON] == [
        "message_removed", "message_removed", "tree_not_ready", "no_assistant_turn",
        "no_assistant_turn", "empty_text", "missing_field", "bad_field", "invalid_json", None]
    assert b["id"][0] == "oasst1:s" and b["id"][-1] == f"oasst1:{TREE_ID}"


def test_flat_messages_jsonl_and_parquet_give_the_trees(tmp_path: Path) -> None:
    other = tree("t2", msg("t2", "prompter", "Second tree", replies=[
        msg("z1", "assistant", "Its answer.", rank=0)]))
    messages = flatten(TREE) + flatten(other)
    jsonl = write_jsonl(tmp_path / "2023-04-12_oasst_ready.messages.jsonl.gz", messages,
                        gz=True)
    parquet = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(messages), parquet)
    for file in (jsonl, str(parquet)):
        b = read(file)
        assert b["id"] == [f"oasst1:{TREE_ID}", "oasst1:t2"]
        assert pairs(b, 0) == BEST
        assert pairs(b, 1) == [("user", "Second tree"), ("assistant", "Its answer.")]
        assert json.loads(b["meta"][0])["message_ids"] == BEST_IDS
        assert SourceReader("oasst1", "oasst1", None, StorageConfig()).count(file) == 2


def test_flat_messages_without_tree_ids_and_a_missing_prompt(tmp_path: Path) -> None:
    messages = [{k: v for k, v in m.items() if k != "message_tree_id"} for m in flatten(TREE)]
    orphan = copy.deepcopy(messages[1])  # a reply whose tree's prompt is not in the file
    orphan.update(message_id="o1", parent_id="gone", message_tree_id="gone")
    b = read(write_jsonl(tmp_path / "msgs.jsonl", messages + [orphan]))
    assert b["id"] == [f"oasst1:{TREE_ID}", "oasst1:gone"]
    assert b[REJECT_REASON] == [None, "missing_field"]
    assert pairs(b, 0) == BEST


def test_thread_form(tmp_path: Path) -> None:
    thread = {"thread_id": "a23", "thread": [
        {"message_id": TREE_ID, "text": "Why can't we divide by 0?", "role": "prompter",
         "lang": "en"},
        {"message_id": "a2", "text": "Because...", "role": "assistant", "lang": "en"}]}
    b = read(write_jsonl(tmp_path / "threads.jsonl", [thread, {"thread_id": "x", "thread": 3}]))
    assert b["id"] == ["oasst1:a23", "oasst1:x"]
    assert pairs(b, 0) == [("user", "Why can't we divide by 0?"), ("assistant", "Because...")]
    assert b[REJECT_REASON] == [None, "bad_field"]

