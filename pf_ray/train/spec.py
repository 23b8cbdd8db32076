"""The spec of ``kind: train``: rewriter SFT or one Clever Flamingo stage (spec §3, §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pf_ray.specs import SpecBase, Strict


class TrainData(Strict):
    """One dataset of a training mixture."""

    path: str = Field(..., description="pf-ray dataset root (pairs or samples)")
    ratio: float = Field(1.0, gt=0, description="sampling weight (see TrainSpec.sampling)")


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0)
    lr_scale: float = Field(1.0, gt=0, description="multiplies lr (clever_s3: 0.1)")
    weight_decay: float = Field(0.1, ge=0, description="on cross-attention parameters only")
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(1.0, gt=0)


class ScalingSpec(Strict):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    accelerator_type: str | None = None


class TrainSpec(SpecBase):
    """Rewriter SFT or one Clever Flamingo stage on Ray Train (spec §3 Table 4, §6)."""

    kind: Literal["train"]
    stage: Literal["rewriter", "clever_s1", "clever_s2", "clever_s3"]
    model: str = Field(..., description="a preset name (tiny, openflamingo-9b-v1...) or a "
                                        "pf-ray model folder / URI (a previous stage's export)")
    data: list[TrainData] = Field(..., min_length=1)
    sampling: Literal["ratio", "sqrt"] = Field(
        "ratio", description="ratio: weight = ratio; sqrt: weight = ratio * sqrt(rows)")
    samples_per_epoch: int | None = Field(None, ge=1, description="None: all rows once")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(4, ge=1, description="samples per worker per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)
    max_images: int = Field(10, ge=1)
    multiturn: bool | None = Field(None, description="None: on for clever stages")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    fsdp: bool = Field(True, description="FSDP2 fully_shard (vision tower, each decoder layer)")
    bf16: bool | None = Field(None, description="bf16 autocast; None: on when using GPUs")
    storage_path: str = Field(..., description="checkpoints + metrics: folder or s3://")
    run_name: str = Field(..., description="run folder under storage_path; a rerun with the "
                                           "same name resumes from its latest checkpoint")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    max_failures: int = Field(1, ge=0)
    export: str | None = Field(None, description="model folder written at the end")
    export_lora: Literal["adapter", "merged"] = "adapter"
    seed: int = 0
    fail_at_step: int | None = Field(None, description="testing: raise once at this step")
