"""Unit tests of the source adapters (:mod:`pf_ray.data.sources`) on files written in the
public datasets' own formats: LLaVA-Instruct-150K, ShareGPT and UltraChat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pf_ray.data.schema import ROLES, SAMPLE_COLUMNS
from pf_ray.data.sources import SourceReader, expand_paths
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, Batch

LLAVA_BUS: dict[str, Any] = {
    "id": "000000033471",
    "image": "000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
    ],
}

SHAREGPT_FIRST: dict[str, Any] = {
    "id": "QWJhYvA_0",
    "conversations": [
        {"from": "system", "value": "You are helpful."},
        {"from": "human", "value": "hi"},
        {"from": "gpt", "value": "Hello! How can I help?"},
    ],
}

ULTRACHAT_LINE: dict[str, Any] = {
    "id": "0",
    "data": [
        "How can cross training benefit groups?",
        "Cross training can benefit groups in many ways...",
        "Can you give an example?",
        "For example, a team where everyone can cover the front desk...",
    ],
}

ULTRACHAT_200K: dict[str, Any] = {
    "prompt_id": "abc",
    "prompt": "Write a haiku about rain.",
    "messages": [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof / ..."},
    ],
}

# ------------------------------------------------------------------ helpers


def write_json(path: Path, records: list[Any]) -> str:
    """Write ``records`` as a pretty-printed JSON array; return the path as a string."""
    path.write_text(json.dumps(records, indent=2))
    return str(path)


def write_jsonl(path: Path, lines: list[Any | str]) -> str:
    """Write JSON Lines (strings are written verbatim, other values as JSON)."""
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path.write_text(text + "\n")
    return str(path)


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """ShareGPT/LLaVA turns from (speaker, text) pairs."""
    return [{"from": s, "value": v} for s, v in pairs]


def read(adapter: str, source: str, file: str, start: int = 0, stop: int = 10**9,
         image_root: str | None = None) -> Batch:
    """Read a slice through a SourceReader and check the batch invariants."""
    batch = SourceReader(adapter, source, image_root, StorageConfig()).read(file, start, stop)
    check_invariants(batch)
    return batch


def check_invariants(batch: Batch) -> None:
    """Every column has one value per row; accepted rows hold only valid, non-empty turns;
    rejected rows carry stage and detail."""
    columns = (*SAMPLE_COLUMNS, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)
    assert set(batch) == set(columns)
    n = len(batch["id"])
    assert all(len(batch[c]) == n for c in columns)
    assert len(set(batch["id"])) == n, f"duplicate ids: {batch['id']}"
    for i in range(n):
        json.loads(batch["meta"][i])
        if batch[REJECT_REASON][i] is None:
            assert batch[REJECT_STAGE][i] is None and batch[REJECT_DETAIL][i] is None
            convs = batch["conversations"][i]
            assert convs, batch["id"][i]
            for t in convs:
                assert set(t) == {"role", "content"}
                assert t["role"] in ROLES
                assert isinstance(t["content"], str) and t["content"].strip()
                assert "<image>" not in t["content"]
            roles = [t["role"] for t in convs]
            assert "user" in roles and "assistant" in roles
        else:
            assert batch[REJECT_STAGE][i] == "ingest"
            assert batch[REJECT_DETAIL][i]
            assert batch["conversations"][i] == []


def row(batch: Batch, i: int) -> dict[str, Any]:
    """Row ``i`` of a batch as a dict."""
    return {c: v[i] for c, v in batch.items()}


def meta(batch: Batch, i: int) -> dict[str, Any]:
    """The decoded ``meta`` of row ``i``."""
    return json.loads(batch["meta"][i])


def reasons(batch: Batch) -> list[str | None]:
    """The reject reason of every row (None for accepted rows)."""
    return list(batch[REJECT_REASON])


# ------------------------------------------------------------------ LLaVA


def test_llava_record(tmp_path: Path) -> None:
    file = write_json(tmp_path / "llava_instruct_150k.json", [LLAVA_BUS])
    b = read("llava_instruct", "llava_instruct", file, image_root="/data/coco/train2017")
    assert len(b["id"]) == 1
    r = row(b, 0)
    assert r["id"] == "llava_instruct:000000033471"
    assert r[REJECT_REASON] is None
    assert r["source"] == "llava_instruct"
    assert r["task"] == "conversation"  # the merged file: two human turns
    assert r["image"] == "/data/coco/train2017/000000033471.jpg"
    assert r["image_bytes"] is None and r["boxes"] is None
    assert r["conversations"] == [
        {"role": "user", "content": "What are the colors of the bus in the image?"},
        {"role": "assistant", "content": "The bus in the image is white and red."},
        {"role": "user", "content": "What feature can be seen on the back of the bus?"},
        {"role": "assistant", "content": "The back of the bus features an advertisement."},
    ]
    m = meta(b, 0)
    assert m["image_placement"] == "before"
    assert m["source_key"] == "000000033471"
    assert m["file"] == "llava_instruct_150k.json"


def test_llava_image_after_text(tmp_path: Path) -> None:
    rec = {"id": "1", "image": "a.jpg",
           "conversations": turns(("human", "What is this?\n<image>"), ("gpt", "A cat."))}
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / "c.json", [rec]))
    assert b["conversations"][0][0] == {"role": "user", "content": "What is this?"}
    assert meta(b, 0)["image_placement"] == "after"
    assert b["image"][0] == "a.jpg"  # no image_root: kept as written


def test_llava_multi_turn(tmp_path: Path) -> None:
    pairs = [("human", "<image>\nq0")] + [
        p for k in range(1, 6) for p in (("gpt", f"a{k - 1}"), ("human", f"q{k}"))
    ] + [("gpt", "a5")]
    rec = {"id": "m", "image": "m.jpg", "conversations": turns(*pairs)}
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / "m.json", [rec]))
    convs = b["conversations"][0]
    assert len(convs) == 12
    assert [t["role"] for t in convs] == ["user", "assistant"] * 6
    assert [t["content"] for t in convs] == [x for k in range(6) for x in (f"q{k}", f"a{k}")]


def test_llava_text_only(tmp_path: Path) -> None:
    rec = {"id": "t1", "conversations": turns(("human", "Tell me a joke."), ("gpt", "No."))}
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / "llava.json", [rec]),
             image_root="/data/coco")
    assert b[REJECT_REASON][0] is None
    assert b["image"][0] is None
    assert b["task"][0] == "text_instruction"
    assert "image_placement" not in meta(b, 0)


def test_llava_repeated_id_gets_suffix(tmp_path: Path) -> None:
    second = {**LLAVA_BUS, "conversations": turns(("human", "<image>\nDescribe."),
                                                  ("gpt", "A bus."))}
    third = {**LLAVA_BUS, "conversations": turns(("human", "<image>\nWhy?"), ("gpt", "Ads."))}
    file = write_json(tmp_path / "llava.json", [LLAVA_BUS, second, third])
    b = read("llava_instruct", "llava_instruct", file)
    assert b["id"] == ["llava_instruct:000000033471", "llava_instruct:000000033471#1",
                       "llava_instruct:000000033471#2"]
    # The suffix depends on the whole file, not on the slice read.
    assert read("llava_instruct", "llava_instruct", file, 1, 2)["id"] == \
        ["llava_instruct:000000033471#1"]
    assert read("llava_instruct", "llava_instruct", file, 2, 3)["id"] == \
        ["llava_instruct:000000033471#2"]


def test_repeated_id_suffix_never_collides(tmp_path: Path) -> None:
    recs = [{"id": i, "conversations": turns(("human", "q"), ("gpt", "a"))}
            for i in ("a", "a", "a#1")]
    b = SourceReader("sharegpt", "sg", None, StorageConfig()).read(
        write_json(tmp_path / "sg.json", recs), 0, 3)
    assert len(set(b["id"])) == 3, b["id"]


def test_llava_image_joined_to_root(tmp_path: Path) -> None:
    recs = [{**LLAVA_BUS, "id": "1", "image": "train2014/COCO_train2014_000000000009.jpg"},
            {**LLAVA_BUS, "id": "2", "image": "sub/../x.jpg"},
            {**LLAVA_BUS, "id": "3", "image": "../outside.jpg"}]
    root = str(tmp_path / "images")
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / "l.json", recs),
             image_root=root)
    assert b["image"][0] == f"{root}/train2014/COCO_train2014_000000000009.jpg"
    assert b["image"][1] == f"{root}/x.jpg"
    assert reasons(b) == [None, None, "image_path_escape"]


@pytest.mark.parametrize("filename,task", [
    ("detail_23k.json", "detail"),
    ("complex_reasoning_77k.json", "reasoning"),
    ("conversation_58k.json", "conversation"),
    ("llava_instruct_150k.json", "conversation"),  # by shape: several human turns
])
def test_llava_task_from_filename(tmp_path: Path, filename: str, task: str) -> None:
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / filename, [LLAVA_BUS]))
    assert b["task"] == [task]


def test_llava_image_token_only_turn_is_rejected(tmp_path: Path) -> None:
    rec = {"id": "x", "image": "x.jpg", "conversations": turns(("human", "<image>"),
                                                               ("gpt", "A dog."))}
    b = read("llava_instruct", "llava_instruct", write_json(tmp_path / "x.json", [rec]))
    assert reasons(b) == ["empty_text"]


# ------------------------------------------------------------------ ShareGPT


def test_sharegpt_record_with_system(tmp_path: Path) -> None:
    b = read("sharegpt", "sharegpt", write_json(tmp_path / "sg_90k_part1.json",
                                                [SHAREGPT_FIRST]))
    r = row(b, 0)
    assert r["id"] == "sharegpt:QWJhYvA_0"
    assert r[REJECT_REASON] is None
    assert r["task"] == "text_instruction"
    assert r["image"] is None
    assert r["conversations"] == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]


@pytest.mark.parametrize("user,assistant", [
    ("user", "assistant"), ("human", "chatgpt"), ("human", "bing"), ("human", "bard"),
    ("Human", "GPT"), ("user", "model"),
])
def test_sharegpt_speaker_names(tmp_path: Path, user: str, assistant: str) -> None:
    rec = {"id": "s", "conversations": turns((user, "question"), (assistant, "answer"))}
    b = read("sharegpt", "sharegpt", write_json(tmp_path / "sg.json", [rec]))
    assert b["conversations"][0] == [{"role": "user", "content": "question"},
                                     {"role": "assistant", "content": "answer"}]


def test_sharegpt_leading_assistant_turn_dropped(tmp_path: Path) -> None:
    rec = {"id": "lead", "conversations": turns(("gpt", "Hi, I am a bot."), ("human", "hi"),
                                                ("gpt", "hello"))}
    b = read("sharegpt", "sharegpt", write_json(tmp_path / "sg.json", [rec]))
    assert b["conversations"][0] == [{"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello"}]
    assert meta(b, 0)["dropped_leading_assistant_turns"] == 1


def test_sharegpt_leading_assistant_after_system_dropped(tmp_path: Path) -> None:
    rec = {"id": "lead", "conversations": turns(("system", "Be nice."), ("gpt", "Hi!"),
                                                ("human", "hi"), ("gpt", "hello"))}
    b = read("sharegpt", "sharegpt", write_json(tmp_path / "sg.json", [rec]))
    assert [t["role"] for t in b["conversations"][0]] == ["system", "user", "assistant"]


@pytest.mark.parametrize("record,reason", [
    ({"id": "e", "conversations": []}, "empty_conversation"),
    ({"id": "u", "conversations": turns(("human", "hi"), ("alien", "zzz"))}, "unknown_role"),
    ({"id": "w", "conversations": turns(("human", "hi"), ("gpt", " \n\t "))}, "empty_text"),
    ({"id": "h", "conversations": turns(("human", "hi"), ("human", "anyone?"))},
     "no_assistant_turn"),
    ({"id": "g", "conversations": turns(("gpt", "hello"))}, "no_user_turn"),
    (["not", "an", "object"], "bad_record"),
    ("a string", "bad_record"),
    ({"id": "m"}, "missing_field"),
    ({"id": "n", "conversations": "hi"}, "bad_field"),
    ({"id": "v", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]},
     "bad_field"),
])
def test_sharegpt_rejects(tmp_path: Path, record: Any, reason: str) -> None:
    good = SHAREGPT_FIRST
    b = read("sharegpt", "sharegpt", write_json(tmp_path / "sg.json", [good, record, good]))
    assert len(b["id"]) == 3
    assert reasons(b) == [None, reason, None]
    assert b["task"][1] == "unknown"


def test_sharegpt_jsonl(tmp_path: Path) -> None:
    recs = [SHAREGPT_FIRST, {"id": "b", "conversations": turns(("user", "q"), ("gpt", "a"))}]
    b = read("sharegpt", "sharegpt", write_jsonl(tmp_path / "sg.jsonl", recs))
    assert b["id"] == ["sharegpt:QWJhYvA_0", "sharegpt:b"]
    assert reasons(b) == [None, None]


def test_sharegpt4v_style_image(tmp_path: Path) -> None:
    rec = {"id": "sa_1", "image": "sam/images/sa_1.jpg",
           "conversations": turns(("human", "<image>\nDescribe it."), ("gpt", "A street."))}
    b = read("sharegpt", "sharegpt4v", write_json(tmp_path / "sg4v.json", [rec]),
             image_root="/data")
    assert b["image"] == ["/data/sam/images/sa_1.jpg"]
    assert b["task"] == ["conversation"]
    assert b["conversations"][0][0]["content"] == "Describe it."
    assert meta(b, 0)["image_placement"] == "before"


# ------------------------------------------------------------------ UltraChat


def test_ultrachat_data_form(tmp_path: Path) -> None:
    b = read("ultrachat", "ultrachat", write_jsonl(tmp_path / "train_0.jsonl", [ULTRACHAT_LINE]))
    r = row(b, 0)
    assert r["id"] == "ultrachat:0"
    assert r["task"] == "text_instruction"
    assert r["image"] is None
    assert r["conversations"] == [
        {"role": "user" if i % 2 == 0 else "assistant", "content": text}
        for i, text in enumerate(ULTRACHAT_LINE["data"])
    ]


def test_ultrachat_200k_messages_form(tmp_path: Path) -> None:
    b = read("ultrachat", "ultrachat", write_jsonl(tmp_path / "train_sft.jsonl",
                                                   [ULTRACHAT_200K, ULTRACHAT_200K]))
    assert reasons(b) == [None, None]
    assert b["conversations"][0] == [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof / ..."},
    ]


def test_ultrachat_bad_lines_and_blank_lines(tmp_path: Path) -> None:
    lines: list[Any | str] = [
        ULTRACHAT_LINE,
        "",
        '{"id": "1", "data": ["unterminated", ',
        "   ",
        {"id": "2", "data": []},
        {"id": "3", "data": ["question only"]},
        {"id": "4", "data": "not a list"},
        {"id": "5", "text": "neither data nor messages"},
        {**ULTRACHAT_LINE, "id": "6"},
    ]
    file = write_jsonl(tmp_path / "train_1.jsonl", lines)
    b = read("ultrachat", "ultrachat", file)
    assert len(b["id"]) == 7  # blank lines are not records
    assert reasons(b) == [None, "invalid_json", "empty_conversation", "no_assistant_turn",
                          "bad_field", "missing_field", None]
    assert b["id"][0] == "ultrachat:0" and b["id"][-1] == "ultrachat:6"
    assert SourceReader("ultrachat", "ultrachat", None, StorageConfig()).count(file) == 7


def test_one_line_malformed_jsonl_is_a_reject(tmp_path: Path) -> None:
    file = tmp_path / "train_2.jsonl"
    file.write_text('{"id": "0" "data": ["a", "b"]}\n')
    b = SourceReader("ultrachat", "ultrachat", None, StorageConfig()).read(str(file), 0, 1)
    assert b[REJECT_REASON] == ["invalid_json"]


def test_one_line_json_object_file(tmp_path: Path) -> None:
    file = tmp_path / "one.json"
    file.write_text(json.dumps(ULTRACHAT_LINE))
    b = read("ultrachat", "ultrachat", str(file))
    assert b["id"] == ["ultrachat:0"] and reasons(b) == [None]


# ------------------------------------------------------------------ files and slices


@pytest.mark.parametrize("adapter", ["llava_instruct", "sharegpt", "ultrachat"])
def test_unparseable_json_array_is_one_reject(tmp_path: Path, adapter: str) -> None:
    file = tmp_path / "broken.json"
    file.write_text('[{"id": "1", "conversations": [}, {"id": "2"}]')
    b = read(adapter, "src", str(file))
    assert len(b["id"]) == 1
    assert reasons(b) == ["unreadable_file"]
    assert b["id"][0].startswith("src:broken-")
    assert SourceReader(adapter, "src", None, StorageConfig()).count(str(file)) == 1


def many_sharegpt(n: int) -> list[Any]:
    """``n`` ShareGPT records, every fourth one rejectable (no assistant turn)."""
    out: list[Any] = []
    for i in range(n):
        convs = turns(("human", f"q{i}")) if i % 4 == 3 else turns(("human", f"q{i}"),
                                                                   ("gpt", f"a{i}"))
        out.append({"id": f"r{i % 7}", "conversations": convs})  # ids repeat
    return out


@pytest.mark.parametrize("start,stop", [(0, 25), (0, 1), (3, 9), (10, 25), (24, 25), (5, 5),
                                        (20, 100)])
def test_slices_are_exact_and_stable(tmp_path: Path, start: int, stop: int) -> None:
    recs = many_sharegpt(25)
    file = write_json(tmp_path / "sg.json", recs)
    whole = read("sharegpt", "sharegpt", file)
    assert len(whole["id"]) == 25
    part = read("sharegpt", "sharegpt", file, start, stop)
    expected = list(range(start, min(stop, 25)))
    assert len(part["id"]) == len(expected)  # nothing lost, nothing extra
    assert part["id"] == [whole["id"][i] for i in expected]
    assert part == {c: [whole[c][i] for i in expected] for c in whole}
    assert read("sharegpt", "sharegpt", file, start, stop) == part  # same ids on a reread
    for k, i in enumerate(expected):
        if i % 4 == 3:
            assert part[REJECT_REASON][k] == "no_assistant_turn"
        else:
            assert part["conversations"][k][0]["content"] == f"q{i}"


def test_slices_partition_the_file(tmp_path: Path) -> None:
    lines: list[Any | str] = [{"id": str(i), "data": [f"q{i}", f"a{i}"]} for i in range(10)]
    lines.insert(4, "{oops")
    lines.insert(7, "")
    file = write_jsonl(tmp_path / "u.jsonl", lines)
    reader = SourceReader("ultrachat", "ultrachat", None, StorageConfig())
    total = reader.count(file)
    assert total == 11
    pieces = [reader.read(file, s, min(s + 3, total)) for s in range(0, total, 3)]
    ids = [i for p in pieces for i in p["id"]]
    assert ids == reader.read(file, 0, total)["id"]
    assert len(ids) == len(set(ids)) == total
    assert sum(r == "invalid_json" for p in pieces for r in p[REJECT_REASON]) == 1


def test_expand_paths_local_glob(tmp_path: Path) -> None:
    for name in ("train_2.jsonl", "train_10.jsonl", "train_1.jsonl", "other.json"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train_3.jsonl").write_text("")
    got = expand_paths(str(tmp_path / "train_*.jsonl"), StorageConfig())
    assert got == sorted(str(tmp_path / n) for n in
                         ("train_1.jsonl", "train_10.jsonl", "train_2.jsonl"))
    assert expand_paths(str(tmp_path / "train_?.jsonl"), StorageConfig()) == \
        [str(tmp_path / "train_1.jsonl"), str(tmp_path / "train_2.jsonl")]
    assert expand_paths(str(tmp_path / "nothing_*.json"), StorageConfig()) == []
    plain = str(tmp_path / "other.json")
    assert expand_paths(plain, StorageConfig()) == [plain]


def test_unknown_adapter(tmp_path: Path) -> None:
    file = write_json(tmp_path / "x.json", [SHAREGPT_FIRST])
    with pytest.raises(ValueError, match="unknown source adapter"):
        SourceReader("nope", "x", None, StorageConfig()).read(file, 0, 1)


def test_ingest_rejects_overlong_turns(tmp_path: Path) -> None:
    """A 300,000-character answer is rejected by ingest (``max_chars``), not kept."""
    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job

    records = [{"conversations": [{"from": "human", "value": "Tell me a story."},
                                  {"from": "gpt", "value": "Once upon a time. " * n}]}
               for n in (3, 17_000, 5)]
    src = tmp_path / "sharegpt.json"
    src.write_text(json.dumps(records))
    spec = parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "out")},
                       "source": {"adapter": "sharegpt", "path": str(src)},
                       "ray": {"progress": False}})
    assert spec.max_chars == 20_000
    (result,) = run_job(spec, executor="local")
    assert result.manifest["totals"]["rows"] == 2
    assert result.manifest["totals"]["rejects_per_reason"] == {"text_too_long": 1}
    reject = Dataset(spec.output.path, spec.storage).read("rejects").to_pylist()[0]
    assert reject["stage"] == "check_text"
    assert reject["detail"] == "turn 1 has 306000 characters > max_chars 20000"
