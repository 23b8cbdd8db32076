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

# hf_vlm family (pf_ray.model.hf_vlm.parts): a stage's Flamingo assignment in its parts
# (perceiver / cross-attention -> connector), then the spec's ``trainable`` overrides, which
# may use either family's part names:
#
#   trainable key                          hf_vlm part
#   vision, lm_lora, lm_embeddings, lm_full the same part
#   connector                              connector
#   perceiver, xattn_attn, xattn_ffn       connector (what Flamingo adds between the vision
#                                          tower and the LM is this family's connector)
_CONNECTOR_ALIASES = ("perceiver", "xattn_attn", "xattn_ffn")


def hf_overrides(trainable: dict[str, bool]) -> dict[str, bool]:
    """``trainable`` in hf_vlm parts (table above). Unknown names, non-booleans and two names
    of the connector with different values raise, naming each."""
    from pf_ray.model.hf_vlm.parts import HF_PARTS

    allowed = (*HF_PARTS, *_CONNECTOR_ALIASES)
    errors = [f"{k}: unknown part (received {v!r}); allowed: {', '.join(allowed)}"
              for k, v in trainable.items() if k not in allowed]
    errors += [f"{k}: received {v!r}; allowed: true or false"
               for k, v in trainable.items() if k in allowed and not isinstance(v, bool)]
    connector = {k: v for k, v in trainable.items()
                 if k == "connector" or k in _CONNECTOR_ALIASES}
    if len(set(connector.values())) > 1:
        errors.append(f"{', '.join(f'{k}: {v}' for k, v in connector.items())}: all name the "
                      "hf_vlm connector; give them one value (or connector alone)")
    if errors:
        raise ValueError("trainability: " + "; ".join(errors))
    out = {k: v for k, v in trainable.items() if k in HF_PARTS}
    if connector:
        out["connector"] = next(iter(connector.values()))
    return out


def hf_stage_parts(stage: str, trainable: dict[str, bool] | None = None) -> dict[str, bool]:
    """What ``stage`` trains of an hf_vlm model, by part, with ``trainable`` applied."""
    from pf_ray.model.hf_vlm.parts import hf_assignment

    return hf_assignment(STAGE_TRAINABILITY[stage]) | hf_overrides(trainable or {})
