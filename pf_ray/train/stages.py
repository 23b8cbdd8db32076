"""Training stages: what each trains (an assignment of model parts) and its data format."""

from __future__ import annotations

from pf_ray.model.trainability import STAGES, Trainability

# stage name in specs -> (trainability assignment, example format)
STAGE_TRAINABILITY: dict[str, Trainability] = {
    "rewriter": STAGES["polite_flamingo"],  # LoRA (+ input embeddings): 0.29B at 9B
    "clever_s1": STAGES["clever_s1"],  # LoRA: text instructions + LLaVA + 10% PF
    "clever_s2": STAGES["clever_s2"],  # perceiver + cross-attention attention: PF
    "clever_s3": STAGES["clever_s3"],  # LoRA again, stage-1 data at lr x 0.1
    # OpenFlamingo's own pretraining (perceiver, cross-attention, embeddings) on image-text
    # pairs: what the paper starts from (OpenFlamingo-9B); the quickstart's base model
    "flamingo_pretrain": STAGES["openflamingo_pretrain"],
}
EXAMPLE_FORMAT = {"rewriter": "rewrite", "clever_s1": "chat", "clever_s2": "chat",
                  "clever_s3": "chat", "flamingo_pretrain": "chat"}
