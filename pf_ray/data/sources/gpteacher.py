"""GPTeacher (teknium1/GPTeacher: General-Instruct, Roleplay-Instruct, Code-Instruct,
Toolformer).

Format: JSON arrays of ``{"instruction", "input", "response"}`` (e.g.
``Instruct/gpt4-instruct-dedupe-only-dataset.json``,
``Roleplay/roleplay-simple-deduped-roleplay-instruct.json``, ``Codegen/codegen-instruct.json``,
``Toolformer/toolformer-dedupe-only-dataset.json``). Re-releases in Alpaca's format
(Alpaca-CoT's ``GPTeacher/``) name the response ``output``; both are read. ``input`` joins
the instruction as for Alpaca-GPT-4. Records have no id: keys are
``<file stem>/#<position>``, so the four files can be one source.
"""

from __future__ import annotations

from pf_ray.data.sources.adapter import instruction_adapter

ADAPTER = instruction_adapter(
    "gpteacher", "GPTeacher: General, Roleplay, Code and Toolformer instructions (JSON arrays)",
    ("response", "output"))
