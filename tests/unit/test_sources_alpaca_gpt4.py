"""The Alpaca-GPT-4 adapter on ``alpaca_gpt4_data.json`` records (instruction/input/output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pf_ray.data.sources import SourceReader
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_REASON, Batch

# The first records of alpaca_gpt4_data.json (outputs shortened).
RECORDS: list[dict[str, Any]] = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "1. Eat a balanced and nutritious diet: ..."},
    {"instruction": "Identify the odd one out.", "input": "Twitter, Instagram, Telegram",
     "output": "The odd one out is Telegram. ..."},
]


def read(path: Path, records: list[Any]) -> Batch:
    path.write_text(json.dumps(records, indent=4))
    b = SourceReader("alpaca_gpt4", "alpaca_gpt4", None, StorageConfig()).read(
        str(path), 0, 10**9)
    assert len(set(b["id"])) == len(b["id"])
    return b


def test_records(tmp_path: Path) -> None:
    b = read(tmp_path / "alpaca_gpt4_data.json", RECORDS)
    assert b["id"] == ["alpaca_gpt4:alpaca_gpt4_data/#0", "alpaca_gpt4:alpaca_gpt4_data/#1"]
    assert b[REJECT_REASON] == [None, None]
    assert b["task"] == ["text_instruction"] * 2 and b["image"] == [None, None]
    assert b["conversations"][0] == [
        {"role": "user", "content": "Give three tips for staying healthy."},
        {"role": "assistant", "content": "1. Eat a balanced and nutritious diet: ..."}]
    # a non-empty input joins as the Clever Flamingo converter writes it
    assert b["conversations"][1][0]["content"] == (
        "Identify the odd one out.\ninput: Twitter, Instagram, Telegram")
    assert json.loads(b["meta"][1])["has_input"] is True
    assert "has_input" not in json.loads(b["meta"][0])


def test_two_files_one_source(tmp_path: Path) -> None:
    """English and Chinese files have no ids: keys carry the file stem."""
    for name in ("alpaca_gpt4_data.json", "alpaca_gpt4_data_zh.json"):
        (tmp_path / name).write_text(json.dumps(RECORDS[:1]))
    reader = SourceReader("alpaca_gpt4", "alpaca_gpt4", None, StorageConfig())
    ids = [i for n in ("alpaca_gpt4_data.json", "alpaca_gpt4_data_zh.json")
           for i in reader.read(str(tmp_path / n), 0, 1)["id"]]
    assert ids == ["alpaca_gpt4:alpaca_gpt4_data/#0", "alpaca_gpt4:alpaca_gpt4_data_zh/#0"]


@pytest.mark.parametrize("record,reason", [
    ({"instruction": "Say hi.", "input": ""}, "no_assistant_turn"),
    ({"instruction": "Say hi.", "input": "", "output": "  "}, "empty_text"),
    ({"instruction": " ", "input": "", "output": "Hi"}, "empty_text"),
    ({"input": "x", "output": "Hi"}, "missing_field"),
    ({"instruction": ["Say hi."], "output": "Hi"}, "bad_field"),
    ({"instruction": "Say hi.", "input": 3, "output": "Hi"}, "bad_field"),
    ({"instruction": "Say hi.", "output": None}, "bad_field"),
    ("a string", "bad_record"),
])
def test_rejects(tmp_path: Path, record: Any, reason: str) -> None:
    b = read(tmp_path / "alpaca_gpt4_data.json", [RECORDS[0], record, RECORDS[1]])
    assert b[REJECT_REASON] == [None, reason, None]


def test_instruction_blank_input_given(tmp_path: Path) -> None:
    b = read(tmp_path / "alpaca_gpt4_data.json",
             [{"instruction": "", "input": "Translate: bonjour", "output": "Hello"}])
    assert b["conversations"][0][0]["content"] == "Translate: bonjour"
