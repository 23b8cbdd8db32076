"""The spec of ``kind: train``: rewriter SFT or one Clever Flamingo stage (paper.md §3, §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pf_ray.model.hf_vlm.family import Family
from pf_ray.specs import SpecBase, Strict

if TYPE_CHECKING:
    from pf_ray.model.config import LoraSettings
    from pf_ray.model.trainability import Trainability


class TrainData(Strict):
    """One dataset of a training mixture: a relative weight, or its own count per epoch.

    ``ratio`` (default 1) shares ``samples_per_epoch`` between the datasets; ``samples`` (an
    exact count) or ``fraction`` (of its rows, ``round(fraction * rows)``) fix the dataset's
    own examples per epoch, and the epoch is their sum. One spec uses one kind. ``sources``
    and ``tasks`` restrict the dataset to some of its rows (a row must match both); the counts
    apply to those rows.
    """

    path: str = Field(..., description="pf-ray dataset root (pairs or samples)")
    ratio: float | None = Field(None, gt=0, description="relative sampling weight (None: 1; "
                                                         "see TrainSpec.sampling)")
    samples: int | None = Field(None, ge=1, description="exact examples per epoch (rows "
                                                        "repeated or sampled, seeded)")
    fraction: float | None = Field(None, gt=0, description="examples per epoch as a fraction "
                                                           "of the rows (0.1: a tenth; 2: twice)")
    sources: list[str] | None = Field(None, min_length=1, description="only the rows of these "
                                      "sources (the source column); None: every row")
    tasks: list[str] | None = Field(None, min_length=1, description="only the rows of these "
                                    "tasks (the task column; with sources, rows of both); "
                                    "None: every task")

    @model_validator(mode="after")
    def _one_kind(self) -> TrainData:
        given = [k for k in ("ratio", "samples", "fraction") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one of ratio (a relative weight), "
                             "samples or fraction (this dataset's own count per epoch)")
        return self

    @property
    def has_target(self) -> bool:
        return self.samples is not None or self.fraction is not None


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0)
    lr_scale: float = Field(1.0, gt=0, description="multiplies lr (clever_s3: 0.1)")
    weight_decay: float = Field(0.1, ge=0, description="on cross-attention parameters only "
                                "(model family hf_vlm: on the connector only)")
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


class FailureSpec(Strict):
    """How Ray Train restarts a failed run, from its latest checkpoint (Train V2's
    ``ray.train.FailureConfig``). A failure (a worker error, an out-of-memory, a lost node)
    and a preemption (a spot / preemptible node reclaimed with notice) have separate
    budgets; either restart resumes from the latest committed checkpoint, so a restart
    costs at most ``checkpoint_every`` steps.

    On spot nodes: keep ``max_failures`` small (a real error repeats), give preemptions a
    budget of their own (``max_preemption_failures``: -1 never gives up, a number bounds
    what a churning spot market can cost) and lower ``checkpoint_every`` so that each
    reclaim loses little. Ray's ``relax_collectives_on_preemption`` is left off: every
    rank writes its own shard of a pf-ray checkpoint (FSDP), so one committed without the
    preempted ranks could not be resumed.
    """

    max_failures: int = Field(1, ge=-1, description="restarts after worker failures (errors, "
                              "OOM, lost nodes that were not preempted); -1: no limit; "
                              "0: fail at the first")
    max_preemption_failures: int = Field(
        -1, ge=-1, description="restarts after node preemptions, counted apart from "
        "max_failures; -1: no limit; 0: a preemption fails the run. Spot users: -1, or a "
        "bound (e.g. 10) on what repeated reclaims may cost")
    preemption_grace_s: float = Field(
        0.0, ge=0, description="seconds the surviving workers keep running past a "
        "preemption's deadline before Ray Train restarts the run (e.g. to finish a "
        "checkpoint upload); 0: restart at the deadline. pf-ray's checkpoints need every "
        "rank, so a longer grace rarely helps: lower checkpoint_every instead")


class HFLoraSpec(Strict):
    """LoRA on the language model of an ``hf_vlm`` model (peft; paper.md §3: r 64, alpha 16,
    dropout 0.1 on q/k/v/o/gate/up/down_proj). The targets are matched inside the language
    model only (:func:`pf_ray.model.hf_vlm.parts.lm_lora_pattern`): the vision tower's own
    ``q_proj`` never gets LoRA. The Flamingo family keeps its LoRA in the model's config."""

    r: int = Field(64, ge=1, description="rank")
    alpha: int = Field(16, ge=1, description="lora_alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on LoRA's input")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="module names inside the language model")

    def settings(self) -> LoraSettings:
        from pf_ray.model.config import LoraSettings

        return LoraSettings(r=self.r, alpha=self.alpha, dropout=self.dropout,
                            target_modules=tuple(self.target_modules))


TRACKING_EXTRA = "pip install 'pf-ray[tracking]'"
# tracking backend -> (module, distribution): heavy, so in the tracking extra
TRACKING_MODULES = {"mlflow": ("mlflow", "mlflow-skinny"), "wandb": ("wandb", "wandb")}


class MlflowTracking(Strict):
    """An MLflow run per training run (rank 0 logs; Ray's ``setup_mlflow``)."""

    tracking_uri: str | None = Field(
        None, description="MLflow server (http://...), database or file:///folder (a file "
        "store: MLFLOW_ALLOW_FILE_STORE is set for it); None: MLFLOW_TRACKING_URI on the workers")
    experiment: str = Field("pf-ray", min_length=1, description="experiment name (created "
                                                                "when missing)")
    run_name: str | None = Field(None, description="MLflow run name; None: the spec's run_name")
    tags: dict[str, str] = Field(default_factory=dict, description="tags set on the run")


class WandbTracking(Strict):
    """A Weights & Biases run per training run (rank 0 logs; Ray's ``setup_wandb``)."""

    project: str = Field("pf-ray", min_length=1, description="W&B project")
    entity: str | None = Field(None, description="team or user; None: the API key's default")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="offline: written under the run folder's wandb/ (wandb sync "
        "uploads it later); online needs WANDB_API_KEY on the workers")
    group: str | None = Field(None, description="W&B run group (e.g. the pipeline's name)")
    tags: list[str] = Field(default_factory=list, description="W&B run tags")


class TrackingSpec(Strict):
    """Where per-step training metrics go besides ``metrics.json`` / ``metrics.csv``."""

    tensorboard: bool = Field(True, description="TensorBoard event files under "
                                                "storage_path/run_name/tensorboard/")
    mlflow: MlflowTracking | None = Field(None, description="log to MLflow (the tracking "
                                                            "extra); None: off")
    wandb: WandbTracking | None = Field(None, description="log to Weights & Biases (the "
                                                          "tracking extra); None: off")

    @field_validator("mlflow", "wandb")
    @classmethod
    def _extra_installed(cls, v: Strict | None, info: ValidationInfo) -> Strict | None:
        """The backend's package is importable here (the driver, and again on each worker)."""
        import importlib.util

        module, dist = TRACKING_MODULES[str(info.field_name)]
        if v is not None and importlib.util.find_spec(module) is None:
            raise ValueError(f"needs the {module} package ({dist}), which is not installed: "
                             f"{TRACKING_EXTRA}")
        return v


class TrainSpec(SpecBase):
    """Rewriter SFT or one Clever Flamingo stage on Ray Train (paper.md §3 Table 4, §6)."""

    kind: Literal["train"]
    stage: Literal["rewriter", "clever_s1", "clever_s2", "clever_s3", "flamingo_pretrain"]
    model: str = Field(..., description="a preset name (tiny, openflamingo-9b-v1...; "
                       "tiny-idefics3, smol-vlm, tiny-llava: family hf_vlm) or a model folder "
                       "/ URI (a previous stage's export); in YAML also {family: hf_vlm, path: "
                       "FOLDER} for any transformers image-text-to-text model")
    model_family: Family = Field(
        "flamingo", description="flamingo (pf-ray's OpenFlamingo layout) or hf_vlm (a "
        "transformers image-text-to-text folder); set by model: {family, path} or an hf_vlm "
        "preset name; a folder of the other family fails at run start")
    lora: HFLoraSpec | None = Field(
        None, description="hf_vlm: LoRA on the language model for stages that train lm_lora "
        "(None: r 64, alpha 16, dropout 0.1, q/k/v/o/gate/up/down_proj); a model folder "
        "with adapter/ (an earlier stage's export) continues that adapter instead. Not for "
        "the flamingo family (its LoRA is in the model config)")
    data: list[TrainData] = Field(..., min_length=1)
    sampling: Literal["ratio", "sqrt"] = Field(
        "ratio", description="ratio: weight = ratio; sqrt: weight = ratio * sqrt(rows)")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="examples per epoch shared by ratio (None: all rows once); "
        "unset when data give samples / fraction")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(4, ge=1, description="samples per worker per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)
    max_images: int = Field(10, ge=1)
    multiturn: bool | None = Field(None, description="None: on for clever stages")
    rewrite_prompt: Literal["paper", "released"] = Field(
        "paper", description="rewriter stage: the paper's prompt, or the one the released "
        "Polite Flamingo weights were trained with (to fine-tune them further)")
    multiturn_pool: int = Field(
        2048, ge=1, description="multi-turn candidates are drawn from the last rows of the "
        "(mixed) stream: how many each training worker keeps")
    shuffle_window: int = Field(
        8192, ge=1, description="consecutive rows of the interleaved sources shuffled together "
        "(seeded) so that batches mix datasets; 1: none")
    data_workers: int = Field(
        2, ge=1, description="threads per training worker that build its examples (image "
        "decoding, pad-to-square, transform, tokenisation, multi-turn augmentation) while the "
        "GPU steps run; each worker builds only its own share of every global batch, within "
        "the CPUs of scaling.cpus_per_worker. The examples are the same for any number")
    pad_square: float | None = Field(
        None, ge=0, le=1, description="probability an image is padded to a square with a "
        "random colour (seeded per row); None: 0.5 on clever stages, 0 for the rewriter")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    fsdp: bool = Field(True, description="FSDP2 fully_shard: vision tower, each "
                       "cross-attention block, each decoder layer, embeddings and head each "
                       "their own unit; a model folder is loaded shard by shard (no rank holds "
                       "the full model)")
    bf16: bool | None = Field(None, description="compute in bfloat16 (FSDP gathers in bf16, "
                              "reduces in fp32; autocast without FSDP); trainable weights and "
                              "their optimizer states stay fp32. None: on when using GPUs")
    activation_checkpointing: bool = Field(
        False, description="recompute each decoder layer (and its cross-attention block) in "
        "the backward pass: less activation memory for ~1/3 more compute; on for the 9B runs")
    storage_path: str = Field(..., description="checkpoints + metrics: folder or s3://")
    run_name: str = Field(..., description="run folder under storage_path; a rerun with the "
                                           "same name resumes from its latest checkpoint")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    failure: FailureSpec = Field(default_factory=FailureSpec,
                                 description="restarts after failures and preemptions")
    max_failures: int | None = Field(None, ge=-1, description="older spelling of "
                                     "failure.max_failures (either, not both)")
    export: str | None = Field(
        None, description="model folder written at the end, its marker (_export.json) last; "
        "a rerun skips the stage when it holds this run_name's complete export")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="TensorBoard "
                                   "(on), MLflow, W&B: per-step metrics of rank 0")
    export_lora: Literal["adapter", "merged"] = "adapter"
    seed: int = 0
    fail_at_step: int | None = Field(None, description="testing: raise once at this step")
    trainable: dict[str, bool] | None = Field(
        None, description="parts to switch on or off on top of the stage's assignment "
        "(vision, perceiver, xattn_attn, xattn_ffn, lm_lora, lm_embeddings, lm_full; hf_vlm: "
        "vision, connector, lm_lora, lm_embeddings, lm_full, with perceiver / xattn_* "
        "meaning its connector); e.g. {lm_full: true} when the LM is random (the tiny "
        "preset), where LoRA alone cannot learn")

    @model_validator(mode="before")
    @classmethod
    def _model_field(cls, data: Any) -> Any:
        """``model: {family, path}`` -> ``model`` + ``model_family`` (an hf_vlm preset name
        gets family hf_vlm); errors name the field."""
        from pf_ray.model.hf_vlm.family import split_model_field

        return split_model_field(data)

    @field_validator("trainable")
    @classmethod
    def _parts(cls, v: dict[str, bool] | None,
               info: ValidationInfo) -> dict[str, bool] | None:
        from pf_ray.model.trainability import Trainability

        if v is None:
            return v
        if info.data.get("model_family") == "hf_vlm":
            from pf_ray.train.stages import hf_overrides

            hf_overrides(v)  # names every unknown part and every conflict
        else:
            Trainability.from_dict(v)  # names every unknown part
        return v

    def trainability(self) -> Trainability:
        """The stage's assignment with ``trainable`` applied (family flamingo)."""
        from pf_ray.model.trainability import Trainability
        from pf_ray.train.stages import STAGE_TRAINABILITY

        if self.model_family != "flamingo":
            raise ValueError("trainability(): the flamingo family's parts; an hf_vlm spec "
                             "has hf_parts()")
        parts = STAGE_TRAINABILITY[self.stage].as_dict() | (self.trainable or {})
        return Trainability.from_dict(parts)

    def hf_parts(self) -> dict[str, bool]:
        """The stage's assignment in hf_vlm parts (vision, connector, lm_lora,
        lm_embeddings, lm_full) with ``trainable`` applied (:func:`stages.hf_stage_parts`)."""
        from pf_ray.train.stages import hf_stage_parts

        return hf_stage_parts(self.stage, self.trainable)

    def lora_settings(self) -> LoraSettings:
        """hf_vlm: the LoRA a stage adds when its model has none (``lora``, or the paper's)."""
        return (self.lora or HFLoraSpec()).settings()

    @model_validator(mode="after")
    def _family_fields(self) -> TrainSpec:
        if self.model_family == "flamingo":
            if self.lora is not None:
                raise ValueError("lora: for model family hf_vlm only; the flamingo family's "
                                 "LoRA is part of its model config (the preset or the "
                                 "folder's config.json)")
            return self
        if self.stage == "flamingo_pretrain":
            raise ValueError("stage: 'flamingo_pretrain' trains the flamingo family's "
                             "perceiver and cross-attention; model family hf_vlm allows "
                             "rewriter, clever_s1, clever_s2, clever_s3")
        if self.rewrite_prompt != "paper":
            raise ValueError(f"rewrite_prompt: {self.rewrite_prompt!r} is the released Polite "
                             "Flamingo weights' format (family flamingo); hf_vlm models "
                             "write the rewriter's prompt through their chat template: "
                             "allowed: 'paper'")
        return self

    @model_validator(mode="after")
    def _max_failures(self) -> TrainSpec:
        if self.max_failures is None or self.max_failures == self.failure.max_failures:
            return self
        if "max_failures" in self.failure.model_fields_set:
            raise ValueError(f"max_failures: {self.max_failures} and failure.max_failures: "
                             f"{self.failure.max_failures}; give failure.max_failures alone")
        self.failure = self.failure.model_copy(update={"max_failures": self.max_failures})
        return self

    @model_validator(mode="after")
    def _one_mixture_kind(self) -> TrainSpec:
        with_target = [k for k, d in enumerate(self.data) if d.has_target]
        if not with_target:
            return self
        first = with_target[0]
        for k, d in enumerate(self.data):
            if d.ratio is not None:
                raise ValueError(
                    f"data.{k}.ratio: a relative weight cannot be mixed with data.{first}'s own "
                    "samples/fraction; give every dataset samples or fraction, or every one "
                    "a ratio")
            if not d.has_target:
                raise ValueError(
                    f"data.{k}: give samples or fraction, as data.{first} does (without them "
                    "it would be a relative weight)")
        if self.samples_per_epoch is not None:
            raise ValueError("samples_per_epoch: the data give their own samples/fraction and "
                             "the epoch is their sum; leave samples_per_epoch unset")
        if self.sampling != "ratio":
            raise ValueError(f"sampling: {self.sampling!r} weighs ratios; the data give their "
                             "own samples/fraction")
        return self
