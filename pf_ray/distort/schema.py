"""What ``kind: distort`` writes: rewriter training pairs."""

from __future__ import annotations

import pyarrow as pa

from pf_ray.data.schema import IMAGE, OutputSchema

# A rewriter training pair: a clean answer and its distorted version (distort stage).
#   family:      llm | augment | boxes
#   style:       the LLM distortion style's short name, or the augment ops applied
#   seed:        the per-row seed every random choice of the pair was drawn from
#   turn:        index of the assistant turn of the source conversation that was distorted
#   instruction: the user turn before it (text only, no image marker)
#   image, image_bytes, extra_images: the sample's images (data/schema.py)
PAIR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("style", pa.string()),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("turn", pa.int32(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("original", pa.string(), nullable=False),
        pa.field("distorted", pa.string(), nullable=False),
        pa.field("image", pa.string()),
        pa.field("image_bytes", pa.binary()),
        pa.field("extra_images", pa.list_(IMAGE)),
        pa.field("meta", pa.string(), nullable=False),
    ]
)

PAIR_OUTPUT = OutputSchema("pair", PAIR_SCHEMA, ("source", "family", "style", "target"))
