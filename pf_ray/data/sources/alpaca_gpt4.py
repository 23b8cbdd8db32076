"""Alpaca-GPT-4 (``alpaca_gpt4_data.json``, also ``alpaca_gpt4_data_zh.json``).

Format (Instruction-Tuning-with-GPT-4/GPT-4-LLM): a JSON array of ``{"instruction",
"input", "output"}``, Alpaca's 52k instructions answered by GPT-4. A non-empty ``input``
joins the instruction as ``instruction + "\\ninput: " + input`` (the Clever Flamingo
authors' converter, see :data:`~pf_ray.data.sources.turns.INPUT_JOIN`). Records have no id:
keys are ``<file stem>/#<position>``.
"""

from __future__ import annotations

from pf_ray.data.sources.adapter import instruction_adapter

ADAPTER = instruction_adapter(
    "alpaca_gpt4", "Alpaca-GPT-4: Alpaca's 52k instructions answered by GPT-4 (JSON array)")
