"""Alpaca-GPT-4 (``alpaca_gpt4_data.json``, also ``alpaca_gpt4_data_zh.json``).

Format (Instruction-Tuning-with-GPT-4/GPT-4-LLM): a JSON array of ``{"instruction",
"input", "output"}``, Alpaca's 52k instructions answered by GPT-4. A non-empty ``input``
joins the instruction as ``instruction + "\\ninput: " + input`` (the Clever Flamingo
authors' converter, see :data:`~pf_ray.data.sources.base.INPUT_JOIN`). Records have no id:
keys are ``<file stem>/#<position>``.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.base import (
    RecordContext,
    file_stem_prefix,
    instruction_turns,
    register,
    sample,
)


@register("alpaca_gpt4", key_prefix=file_stem_prefix)
def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    turns, notes = instruction_turns(record, ("output",))
    return sample(ctx, task="text_instruction", image=None, turns=turns, meta=notes)
