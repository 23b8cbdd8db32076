"""The GPTeacher adapter on its JSON files ({instruction, input, response})."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.sources import SourceReader
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_REASON

# Records as they open Toolformer/toolformer-dedupe-only-dataset.json and
# Roleplay/roleplay-simple-deduped-roleplay-instruct.json (texts shortened).
TOOLFORMER: list[dict[str, Any]] = [
    {"instruction": "toolformer: enabled\ntoolformer access: wikipedia\nA wrapper around "
                    "Wikipedia. ...\nwikipedia(query)\nProvide a summary of a famous "
                    "historical event based on the input event given",
     "input": "French Revolution",
     "response": "Summary of the French Revolution: wikipedia('French Revolution')"},
    {"instruction": "toolformer: enabled\ntoolformer access: python\n...\nShow the current "
                    "date and time.", "input": "",
     "response": "The current date and time is python('...')."},
]
ROLEPLAY: list[dict[str, Any]] = [
    {"instruction": "Imagine you are a detective trying to solve a murder mystery in a "
                    "fictional Victorian-era town. Describe the scene of the crime.",
     "input": "", "response": "The scene of the crime is a dimly lit study..."},
    {"instruction": "Write a dialogue.", "input": "", "response": ""},  # empty: rejected
    {"instruction": "No response field.", "input": ""},
]


def test_files_in_one_ingest(tmp_path: Path) -> None:
    for folder, name, recs in (("Toolformer", "toolformer-dedupe-only-dataset.json", TOOLFORMER),
                               ("Roleplay", "roleplay-simple-deduped-roleplay-instruct.json",
                                ROLEPLAY)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(json.dumps(recs, indent=2))
    (res,) = run_job(parse_spec({
        "kind": "ingest", "output": {"path": str(tmp_path / "out")},
        "source": {"adapter": "gpteacher", "path": [str(tmp_path / "Toolformer" / "*.json"),
                                                     str(tmp_path / "Roleplay" / "*.json")]},
        "images": {"check": False}, "ray": {"progress": False},
        "faults": {"max_reject_fraction": 1.0}}), executor="local")
    assert res.manifest["totals"]["rows"] == 3
    assert res.manifest["totals"]["rejects_per_reason"] == {"empty_text": 1,
                                                            "no_assistant_turn": 1}
    rows = {r["id"]: r for r in Dataset(res.root, StorageConfig()).read().to_pylist()}
    assert sorted(rows) == ["gpteacher:roleplay-simple-deduped-roleplay-instruct/#0",
                            "gpteacher:toolformer-dedupe-only-dataset/#0",
                            "gpteacher:toolformer-dedupe-only-dataset/#1"]
    first = rows["gpteacher:toolformer-dedupe-only-dataset/#0"]
    assert first["task"] == "text_instruction" and first["source"] == "gpteacher"
    assert [(t["role"], t["content"]) for t in first["conversations"]] == [
        ("user", TOOLFORMER[0]["instruction"] + "\ninput: French Revolution"),
        ("assistant", TOOLFORMER[0]["response"])]


def test_alpaca_format_release_reads_output(tmp_path: Path) -> None:
    """Alpaca-CoT's GPTeacher files name the response ``output``."""
    file = tmp_path / "formatted_toolformer-dedupe-only-dataset.json"
    file.write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "Hello"}]))
    b = SourceReader("gpteacher", "gpteacher", None, StorageConfig()).read(str(file), 0, 1)
    assert b[REJECT_REASON] == [None]
    assert b["conversations"][0][1] == {"role": "assistant", "content": "Hello"}
