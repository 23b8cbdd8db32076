"""ShareGPT (``sg_90k_part1.json`` and its many re-releases).

Format: a JSON array (or JSON Lines) of ``{"id", "conversations": [{"from", "value"}]}``.
Speakers vary by release: human/user, gpt/chatgpt/bing/bard/assistant/model, system. A
system turn is kept as the system message; leading model turns are dropped (noted in
meta); empty conversations and unknown speakers are rejected. ShareGPT-style multimodal
releases (ShareGPT4V) carry ``image`` and ``<image>`` exactly as LLaVA does.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.fields import RecordContext, image_ref, sample
from pf_ray.data.sources.turns import conversations_of, normalise_turns, strip_image_tokens


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    turns, notes = normalise_turns(conversations_of(record))
    image = image_ref(record, ctx)
    if image:
        turns, placement = strip_image_tokens(turns)
        notes["image_placement"] = placement
    return sample(ctx, task="conversation" if image else "text_instruction", image=image,
                  turns=turns, meta=notes)


ADAPTER = Adapter("sharegpt", convert, "ShareGPT conversations (and ShareGPT-style "
                  "multimodal releases)")
