"""What the quickstart trains, per model preset, and why those numbers.

Both presets run the same pipeline; they differ in what trains and for how long, measured
on 2 CPUs (README "Quickstart presets" has the table, ``bench/bench_presets.py`` the
script that measured it):

* ``tiny`` (~4M parameters, random weights): a random LM cannot be adapted with LoRA alone
  (the paper's rewriter trains LoRA + embeddings of a *pretrained* LLaMA), so every stage
  that trains LoRA here trains the whole LM too (``trainable: {lm_full: true}``). A step
  costs ~0.4 s in-process, so a few hundred steps fit the budget and the model learns the
  templated synthetic domain.
* ``smol`` (SmolLM2-135M-Instruct, real pretrained weights): the paper's recipe as it is
  (LoRA + embeddings), at ~10x the cost per step of ``tiny``.

Before the paper's stages, both build what the paper starts from: a CLIP image tower
pretrained contrastively (``clip_steps`` on ``clip_images`` synthetic image-caption pairs,
:mod:`pf_ray.model.clip_pretrain`), frozen inside the Flamingo model, and an
OpenFlamingo-style pretraining of the perceiver and cross-attention (``pretrain``, stage
``flamingo_pretrain``) on the synthetic image-text rows: the quickstart's "base" model.
Two documented departures from OpenFlamingo v1 for the offline base, both because its LM
starts random: ``mask: previous_image`` (v2's: text after an image attends to it, so an
answer reads the image directly; v1's ``next_image`` lets only the question's tokens see
it) and ``gate_init`` 1.0 (tanh 0.76: the gates start open; v1 starts them at 0 to keep a
pretrained LM's behaviour, which a random LM does not have). Measured in-process with the
CLIP tower (80 held-out questions): gates at 0, 1200 steps: 0.463 vs 0.388 image withheld;
gates at 1.0, 400 steps: 0.450 vs 0.338; the random tower: no difference at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageRun:
    steps: int
    lr: float
    lr_scale: float = 1.0


@dataclass(frozen=True)
class QuickstartSettings:
    preset: str
    batch_size: int
    max_length: int
    rewriter: StageRun
    s1: StageRun
    s2: StageRun
    s3: StageRun
    pretrain: StageRun = StageRun(steps=300, lr=1e-3)
    # parts trained on top of each stage's assignment (see TrainSpec.trainable)
    lm_trainable: dict[str, bool] = field(default_factory=dict)
    rewrite_batch: int = 32  # rows per generate call of the rewrite stage
    clip_steps: int = 1500  # contrastive steps of the image tower (batch 128)
    clip_images: int = 4000  # synthetic image-caption pairs it trains on (seed 2)
    mask: str = "previous_image"
    gate_init: float = 1.0
    # hf_vlm presets (pf_ray.quickstart.vlm): the model family and the base's extra parts
    family: str = "flamingo"
    base_trainable: dict[str, bool] = field(default_factory=dict)


SETTINGS: dict[str, QuickstartSettings] = {
    "tiny": QuickstartSettings(
        preset="tiny", batch_size=8, max_length=320,
        # s/step on Ray Train, 2 CPUs, bf16 autocast (native_bf16): base 0.37, rewriter
        # 0.72, S1-S3 0.6-0.7, + ~30 s to start each run; steps cut to fit 15 minutes
        # (README "The quickstart" has the run before and after the cut)
        pretrain=StageRun(steps=300, lr=1e-3),
        rewriter=StageRun(steps=100, lr=1e-3),
        s1=StageRun(steps=70, lr=1e-3), s2=StageRun(steps=50, lr=1e-3),
        s3=StageRun(steps=40, lr=1e-3, lr_scale=0.1), clip_steps=1000,
        lm_trainable={"lm_full": True}),
    "smol": QuickstartSettings(
        preset="smol", batch_size=4, max_length=320,
        rewriter=StageRun(steps=40, lr=5e-4),
        s1=StageRun(steps=20, lr=5e-4), s2=StageRun(steps=30, lr=1e-3),
        s3=StageRun(steps=10, lr=5e-4, lr_scale=0.1), rewrite_batch=16,
        # a pretrained LM: OpenFlamingo v1's mask and closed gates, as the paper
        pretrain=StageRun(steps=40, lr=1e-3), clip_steps=600, mask="next_image",
        gate_init=0.0),
    # The modern-VLM variant (pf_ray.quickstart.vlm): an Idefics3 / SmolVLM-layout model
    # over the real SmolLM2-135M-Instruct, a small random vision tower; the paper's recipe
    # (LoRA + embeddings) with the connector as stage 2; vLLM rewrites and serves it. Its
    # vision tower is random, so the base pretraining trains it with the connector.
    "smol-vlm": QuickstartSettings(
        preset="smol-vlm", batch_size=4, max_length=320,
        pretrain=StageRun(steps=60, lr=1e-3),
        rewriter=StageRun(steps=40, lr=5e-4),
        s1=StageRun(steps=20, lr=5e-4), s2=StageRun(steps=30, lr=1e-3),
        s3=StageRun(steps=10, lr=5e-4, lr_scale=0.1), rewrite_batch=16, clip_steps=600,
        family="hf_vlm", base_trainable={"vision": True}),
    # the same flow on the tiny random Idefics3 (tests: every stage runs, in minutes)
    "tiny-vlm": QuickstartSettings(
        preset="tiny-idefics3", batch_size=8, max_length=320,
        pretrain=StageRun(steps=30, lr=1e-3), rewriter=StageRun(steps=30, lr=1e-3),
        s1=StageRun(steps=10, lr=1e-3), s2=StageRun(steps=10, lr=1e-3),
        s3=StageRun(steps=5, lr=1e-3, lr_scale=0.1), clip_steps=100,
        family="hf_vlm", base_trainable={"vision": True}, lm_trainable={"lm_full": True}),
}


def native_bf16() -> bool:
    """Whether the quickstart's training autocasts to bfloat16: on CPUs with native bf16
    (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower, so float32. Master weights,
    optimizer state, evaluation and the saved models stay float32. Measured on 2 cores of an
    AVX512-BF16 EPYC: a MiniLM scorer step 0.35 vs 0.56 s; a ``tiny`` Clever step (batch 8,
    multi-turn, Ray Train) 0.4 vs 0.7 s, its loss within 0.3% of float32's over 20 steps.
    The CLIP tower's contrastive step is not faster (9.5 vs 9.4 s per 200 steps): float32."""
    import torch

    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())
