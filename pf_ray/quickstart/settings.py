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
    # parts trained on top of each stage's assignment (see TrainSpec.trainable)
    lm_trainable: dict[str, bool] = field(default_factory=dict)
    rewrite_batch: int = 32  # rows per generate call of the rewrite stage


SETTINGS: dict[str, QuickstartSettings] = {
    "tiny": QuickstartSettings(
        preset="tiny", batch_size=8, max_length=320,
        rewriter=StageRun(steps=150, lr=1e-3),
        # ~2 s per step on Ray Train on 2 CPUs (0.6 s in-process, bench/bench_presets.py):
        # 150 rewriter steps take ~5.5 min, which leaves ~100 steps for the three stages
        s1=StageRun(steps=50, lr=1e-3), s2=StageRun(steps=30, lr=1e-3),
        s3=StageRun(steps=20, lr=1e-3, lr_scale=0.1),
        lm_trainable={"lm_full": True}),
    "smol": QuickstartSettings(
        preset="smol", batch_size=4, max_length=320,
        rewriter=StageRun(steps=40, lr=5e-4),
        s1=StageRun(steps=20, lr=5e-4), s2=StageRun(steps=30, lr=1e-3),
        s3=StageRun(steps=10, lr=5e-4, lr_scale=0.1), rewrite_batch=16),
}
