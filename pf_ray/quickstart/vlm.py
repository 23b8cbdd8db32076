"""``pf-ray quickstart --preset smol-vlm``: the same pipeline on a modern vision-language
model (the ``hf_vlm`` family), rewriting and serving through vLLM.

The model is an Idefics3 / SmolVLM-layout model built offline
(:mod:`pf_ray.model.hf_vlm.tiny`): the real SmolLM2-135M-Instruct as its language model
(SmolVLM-256M's), a small random vision tower, the pixel-shuffle connector. The steps are the
default quickstart's (:mod:`pf_ray.quickstart.flow`), each beside its baseline, with these
differences:

3. the CLIP tower is still pretrained: the CLIPScore filter of step 6 scores with it;
4. base: the connector (what Flamingo's perceiver and cross-attention are to this layout:
   stage 2's assignment) and, since it starts random, the vision tower, on the synthetic
   image-caption rows;
5. rewriter: the paper's LoRA + embeddings on the language model, through the model's own
   chat template (:mod:`pf_ray.model.hf_vlm.prompts`); held-out ROUGE-L vs copying the
   draft vs the base, with pf-ray's ``hf_vlm`` generator;
6. PF-1M: the rewrite runs on vLLM through ``ray.data.llm`` (``engine.kind: vllm``), its
   actors in the vLLM venv's interpreter (:mod:`pf_ray.engines.interpreter`);
7. Clever stages S1 (LoRA + embeddings), S2 (the connector), S3; held-out VQA of each
   against the S3 model with the image withheld (a black image of the same size);
8. ``kind: eval`` with ``hf_vlm`` model sources;
9. serving: the S3 export through Ray Serve LLM (vLLM, continuous batching) behind pf-ray's
   front, one image chat through the official ``openai`` client.

It needs ``scripts/setup.sh --vllm`` (vLLM's CPU build in ``.venv-vllm``).
"""

from __future__ import annotations

import time
from typing import Any

from pf_ray.data.io import Dataset
from pf_ray.quickstart.flow import (
    HELDOUT_PAIRS,
    IMAGE_SOURCES,
    PRETRAIN_TASKS,
    Quickstart,
    _ci,
)
from pf_ray.quickstart.summary import interval, paired
from pf_ray.specs import StorageConfig

CLIP_TOWER = ("pf-tiny-vit", 64)  # the CLIPScore filter's tower (open_clip), as tiny's


def hf(path: str) -> dict[str, str]:
    """A spec's ``model`` block for an hf_vlm folder or preset."""
    return {"family": "hf_vlm", "path": path}


class VLMQuickstart(Quickstart):
    """The quickstart on an ``hf_vlm`` model (module doc)."""

    def trainable(self, stage: str) -> dict[str, bool] | None:
        if stage == "base":
            return {**self.cfg.lm_trainable, **self.cfg.base_trainable} or None
        return super().trainable(stage)

    def generator(self, model: str, max_new_tokens: int) -> Any:
        from pf_ray.engines.config import DecodingConfig
        from pf_ray.engines.hf_vlm import HFVLMGenerator

        return HFVLMGenerator(model, decoding=DecodingConfig(max_new_tokens=max_new_tokens))

    def base(self) -> str:
        from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder

        self.clip(*CLIP_TOWER)
        init = str(hf_vlm_preset_folder(self.cfg.preset))
        print(f"[4/9] base model: {self.cfg.preset} ({init}); pretraining of the connector "
              f"and the (random) vision tower on the synthetic "
              f"image-caption rows ({', '.join(PRETRAIN_TASKS)}) -> "
              f"{self.path('models', 'base')}")
        # the connector-only stage (clever_s2's assignment) with the tower switched on
        return self.train("clever_s2", hf(init),
                          [{"path": self.path("synthetic"), "sources": IMAGE_SOURCES,
                            "tasks": PRETRAIN_TASKS}],
                          self.cfg.pretrain, name="base", multiturn=False, max_images=1)

    def rewriter(self, base: str) -> str:
        from pf_ray.eval.rewriter import revise_vlm
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

        untrained = scores(revise_vlm(self.generator(base, 96), held))
        print(f"[5/9] rewriter training ({self.cfg.preset}, LoRA + embeddings, from the base) "
              f"-> {self.path('models', 'rewriter')}")
        export = self.train("rewriter", hf(base), [{"path": self.path("distort")}],
                            self.cfg.rewriter)
        trained = scores(revise_vlm(self.generator(export, 96), held))
        copy = scores([p["distorted"] for p in held])

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        self.summary["rewriter"] = {
            "heldout_rougeL": mean(trained), "copy_baseline_rougeL": mean(copy),
            "untrained_rougeL": mean(untrained), "pairs": len(held),
            "intervals": {"trained": interval(trained), "copy": interval(copy),
                          "untrained": interval(untrained),
                          "trained_minus_copy": paired(trained, copy)}}
        rw = self.summary["rewriter"]
        print(f"      held-out reconstruction ROUGE-L ({len(held)} pairs): trained "
              f"{rw['heldout_rougeL']:.3f} | copy the draft {rw['copy_baseline_rougeL']:.3f} "
              f"| untrained {rw['untrained_rougeL']:.3f}; trained - copy "
              f"{_ci(rw['intervals']['trained_minus_copy'])}")
        return export

    def rewrite_engine(self, rewriter: str) -> dict[str, Any]:
        """Step 6's engine: vLLM through ray.data.llm, in the vLLM venv's interpreter."""
        from pf_ray.engines.interpreter import vllm_python

        return {"kind": "vllm", "model": rewriter, "python": vllm_python(), "num_gpus": 0,
                "num_cpus": 1, "batch_size": self.cfg.rewrite_batch,
                "engine_kwargs": {"dtype": "float32", "enforce_eager": True,
                                  "max_model_len": 1024, "gpu_memory_utilization": 0.1,
                                  "max_num_seqs": 16}}

    def clever(self, base: str, clean: list[dict[str, Any]], pf: list[dict[str, Any]]) -> str:
        from pf_ray.eval.vqa import answer_questions_vlm, is_correct, questions_from_rows
        from pf_ray.quickstart.heldout import unseen_by_image

        held = Dataset(self.path("heldout", "synthetic"), StorageConfig()).read().to_pylist()
        candidates = questions_from_rows(held)
        questions, removed = unseen_by_image(candidates, self.training_image_digests())
        self.summary["heldout"]["vqa_questions"] = {
            "candidates": len(candidates), "removed_image_seen_in_training": removed,
            "used": len(questions)}
        correct: dict[str, list[float]] = {}

        def evaluate(tag: str, model: str, blind: bool = False) -> None:
            answers = answer_questions_vlm(self.generator(model, 40), questions, blind=blind)
            correct[tag] = [float(is_correct(a, q)) for a, q in zip(answers, questions,
                                                                    strict=True)]

        evaluate("base", base)
        print("[7/9] Clever U-shaped tuning from the base: S1 (LoRA + embeddings) -> S2 "
              "(connector) -> S3 (LoRA, lr x 0.1), multi-turn augmentation on")
        model = base
        plan = (("clever_s1", clean, self.cfg.s1), ("clever_s2", pf, self.cfg.s2),
                ("clever_s3", clean, self.cfg.s3))
        for stage, data, run in plan:
            model = self.train(stage, hf(model), data, run, max_images=3)
            evaluate(stage.removeprefix("clever_"), model)
        evaluate("blind", model, blind=True)
        tags = ("base", "s1", "s2", "s3", "blind")
        self.summary["clever"] = {
            "heldout_accuracy": {t: sum(correct[t]) / len(correct[t]) for t in tags},
            "questions": len(questions),
            "accuracy_intervals": {t: interval(correct[t]) for t in tags},
            "differences": {"s3_minus_blind": paired(correct["s3"], correct["blind"]),
                            "s3_minus_base": paired(correct["s3"], correct["base"])}}
        cl = self.summary["clever"]
        print(f"      held-out VQA ({len(questions)} questions on unseen images):")
        for t in tags:
            print(f"        {t:5s} accuracy {_ci(cl['accuracy_intervals'][t])}")
        print(f"      S3 - image withheld {_ci(cl['differences']['s3_minus_blind'])}")
        return model

    def eval_model_source(self, name: str, model: str, **fields: Any) -> dict[str, Any]:
        return {"kind": "model", "name": name, "model": hf(model), **fields}

    def serve(self) -> None:
        """The S3 export through Ray Serve LLM (vLLM) behind pf-ray's front."""
        from pf_ray.engines.interpreter import vllm_python
        from pf_ray.eval.vqa import questions_from_rows
        from pf_ray.serve.smoke import chat_once

        model = self.summary["stages"]["clever_s3"]["output"]
        held = Dataset(self.path("heldout", "synthetic"), StorageConfig()).read().to_pylist()
        q = questions_from_rows(held, limit=1)[0]
        print(f"[9/9] serving {model} on Ray Serve LLM (vLLM) behind pf-ray's OpenAI front")
        t = time.time()
        out = chat_once(model, q.image_bytes or b"", q.question,
                        spec_fields={"model": hf(model), "engine": "vllm",
                                     "python": vllm_python()})
        self.summary["serve"] = {k: out.get(k) for k in (
            "ok", "answer", "first_token_s", "total_s", "startup_s", "completion_tokens",
            "error") if k in out}
        self.summary["serve"]["question"] = q.question
        if out.get("ok"):
            print(f"      openai client: {q.question!r} + image -> {out['answer']!r} "
                  f"(first token {out['first_token_s']:.2f} s, total {out['total_s']:.2f} s, "
                  f"{time.time() - t:.0f} s with start-up)")
        else:
            print(f"      serving failed: {out.get('error')}")
