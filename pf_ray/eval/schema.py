"""What ``kind: eval`` writes: every answer source's scored answer to every eval item."""

from __future__ import annotations

import pyarrow as pa

from pf_ray.data.schema import OutputSchema

# One answer of one answer source to one eval item (eval stage, paper.md §7), with its scores.
#   id:          "<item id>@<answerer>"; item: the eval set row's id
#   set:         the eval set's name (a table column: COCO, OK-VQA, ...)
#   answerer:    the answer source's name (a table row: raw, clever, an endpoint...)
#   instruction: the question asked (text, no image marker)
#   references:  the ground-truth answers / captions the metrics compare with
#   output:      the answer; finish_reason: eos | stop | length ("" for dataset answers)
#   metric:      the set's metric: rouge_l | nli | sts | answer_match | none
#   score:       that metric's value (ROUGE-L F, 1/0 judged correct, cosine)
#   reward:      the reward model's logit for (instruction, output) (politeness)
#   rouge_l / sts / nli_logits: the underlying scores (null where not computed)
EVAL_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("item", pa.string(), nullable=False),
        pa.field("set", pa.string(), nullable=False),
        pa.field("answerer", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("image", pa.string()),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("references", pa.list_(pa.string()), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("finish_reason", pa.string()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("reward", pa.float64()),
        pa.field("rouge_l", pa.float64()),
        pa.field("sts", pa.float64()),
        pa.field("nli_logits", pa.list_(pa.float64())),
        pa.field("meta", pa.string(), nullable=False),
    ]
)

EVAL_OUTPUT = OutputSchema("eval", EVAL_SCHEMA, ("answerer", "set"))
