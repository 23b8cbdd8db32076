"""The eval's part of a dataset card: ``pf-ray report EVAL_FOLDER`` shows its tables.

An eval job (:mod:`pf_ray.eval.run`) writes ``tables.md`` (the paper's Table 1-2 layouts,
the win-rate matrix, median rewards) and PNG plots beside its shards; the card includes
those tables and copies the plots next to its README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from pf_ray.specs import StorageConfig
from pf_ray.storage import exists, join, read_bytes, resolve

TABLES, RESULTS = "tables.md", "results.json"


def eval_section(root: str, out: Path, storage: StorageConfig) -> list[str]:
    """Markdown lines of the eval's tables (its title dropped); plots copied into ``out``."""
    fs, base = resolve(root, storage)
    if not exists(fs, join(base, TABLES)):
        return ["## Evaluation", "", f"`{root}` holds no {TABLES} (the eval job did not "
                "finish its tables: rerun it to resume).", ""]
    text = read_bytes(fs, join(base, TABLES)).decode()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    results = json.loads(read_bytes(fs, join(base, RESULTS))) \
        if exists(fs, join(base, RESULTS)) else {}
    for name in results.get("plots", []):
        (out / name).write_bytes(read_bytes(fs, join(base, name)))
    return ["## Evaluation", *(("#" + x) if x.startswith("## ") else x for x in lines), ""]
