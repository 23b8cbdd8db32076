"""UltraChat (``train_*.jsonl``), and UltraChat-200k's ``messages`` form.

Format: JSON Lines of ``{"id": "0", "data": ["user turn", "assistant turn", ...]}``: a
flat list of alternating turns starting with the user. The HF ``ultrachat_200k`` release
writes ``{"prompt_id", "messages": [{"role", "content"}]}`` instead; both are read.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, sample
from pf_ray.data.sources.turns import normalise_turns


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordError("bad_record", f"expected an object, received {type(record).__name__}")
    if "data" in record:
        data = record["data"]
        if not isinstance(data, list):
            raise RecordError("bad_field", f"'data' is {type(data).__name__}, not a list")
        pairs = [("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(data)]
    elif "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise RecordError("bad_field", "'messages' must be a list of {role, content}")
        pairs = [(m.get("role"), m.get("content")) for m in msgs]
    else:
        raise RecordError("missing_field", "neither 'data' nor 'messages'")
    turns, notes = normalise_turns(pairs)
    return sample(ctx, task="text_instruction", image=None, turns=turns, meta=notes)


ADAPTER = Adapter("ultrachat", convert, "UltraChat (and UltraChat-200k) multi-turn dialogues "
                  "(JSON Lines)")
