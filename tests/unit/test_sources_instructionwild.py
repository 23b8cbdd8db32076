"""The InstructionWild adapter: instinwild_en/ch.json (Alpaca format with ids) and the
repository's instruction-only files (rejected: no response)."""

from __future__ import annotations

import json
from pathlib import Path

from pf_ray.data.sources import SourceReader
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_REASON, Batch


def read(file: Path) -> Batch:
    return SourceReader("instructionwild", "instructionwild", None, StorageConfig()).read(
        str(file), 0, 10**9)


def test_both_languages_keep_unique_ids(tmp_path: Path) -> None:
    en = [{"instruction": "Provide a list of the top 10 most popular mobile games in Asia",
           "input": "", "output": "The top 10 most popular mobile games in Asia are: ...",
           "id": 0},
          {"instruction": "Write a haiku about rain.", "output": "Soft rain ...", "id": 1}]
    ch = [{"instruction": "写一首关于春天的诗。", "input": "", "output": "春风拂面……", "id": 0}]
    (tmp_path / "instinwild_en.json").write_text(json.dumps(en, ensure_ascii=False))
    (tmp_path / "instinwild_ch.json").write_text(json.dumps(ch, ensure_ascii=False))
    b_en, b_ch = read(tmp_path / "instinwild_en.json"), read(tmp_path / "instinwild_ch.json")
    assert b_en["id"] == ["instructionwild:instinwild_en/0", "instructionwild:instinwild_en/1"]
    assert b_ch["id"] == ["instructionwild:instinwild_ch/0"]
    assert b_en[REJECT_REASON] == [None, None] and b_ch[REJECT_REASON] == [None]
    assert b_en["task"] == ["text_instruction"] * 2
    assert b_en["conversations"][1] == [  # no input field at all: the instruction alone
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain ..."}]
    assert b_ch["conversations"][0][0]["content"] == "写一首关于春天的诗。"


def test_instruction_only_files_are_rejects(tmp_path: Path) -> None:
    """data_v2/user_1.jsonl (and v1's seed prompts) hold instructions without outputs."""
    file = tmp_path / "user_1.jsonl"
    file.write_text(
        '{"instruction":"What is there one of in every corner and two of in every room?",'
        '"instruction_type":"Open QA"}\n'
        '{"instruction":"Write a poem about Xbox","instruction_type":"Generation"}\n')
    b = read(file)
    assert b[REJECT_REASON] == ["no_assistant_turn"] * 2
    assert all("without a response" in d for d in b["_reject_detail"])
    assert b["id"] == ["instructionwild:user_1/#0", "instructionwild:user_1/#1"]
