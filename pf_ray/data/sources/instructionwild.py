"""InstructionWild (XueFuzhao/InstructionWild: ``instinwild_en.json``, ``instinwild_ch.json``).

Format: Alpaca's, a JSON array of ``{"instruction", "input", "output"}`` (``input`` is
empty or absent: "our instructions have no input field"; an ``id``, where present, is the
key, else ``#<position>``; keys are prefixed by the file stem since both languages count
from zero). The repository's own files hold instructions only: ``data/seed_prompts_*.jsonl``
(v1's 429 seeds) and ``data_v2/user_*.jsonl`` (``{"instruction", "instruction_type"}``);
their records have no response and are rejected as ``no_assistant_turn``. The 52k-per-language
sets with ChatGPT outputs are the ``instinwild_*.json`` files (linked from its
``data/README.md``, re-released in Alpaca-CoT).
"""

from __future__ import annotations

from pf_ray.data.sources.adapter import instruction_adapter

ADAPTER = instruction_adapter(
    "instructionwild", "InstructionWild: user-written instructions with ChatGPT outputs "
    "(JSON arrays, Alpaca's format)")
