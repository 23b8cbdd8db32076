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

from typing import Any

from pf_ray.quickstart.flow import (
    IMAGE_SOURCES,
    PRETRAIN_TASKS,
    Quickstart,
)

CLIP_TOWER = ("pf-tiny-vit", 64)  # the CLIPScore filter's tower (open_clip), as tiny's


def hf(path: str) -> dict[str, str]:
    """A spec's ``model`` block for an hf_vlm folder or preset."""
    return {"family": "hf_vlm", "path": path}


class VLMQuickstart(Quickstart):
    """The quickstart on an ``hf_vlm`` model (module doc): the default flow with this
    family's model blocks, generators and vLLM engines."""

    S2_PARTS = "connector"
    SERVED_BY = "Ray Serve LLM (vLLM) behind pf-ray's OpenAI front"

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

    def model_block(self, folder: str) -> dict[str, str]:
        return hf(folder)

    def revise(self, model: str, pairs: list[dict[str, Any]]) -> list[str]:
        from pf_ray.eval.rewriter import revise_vlm

        return revise_vlm(self.generator(model, 96), pairs)

    def answers(self, model: str, questions: list[Any], *, blind: bool = False) -> list[str]:
        from pf_ray.eval.vqa import answer_questions_vlm

        return answer_questions_vlm(self.generator(model, 40), questions, blind=blind)

    def rewrite_engine(self, rewriter: str) -> dict[str, Any]:
        """Step 6's engine: vLLM through ray.data.llm, in the vLLM venv's interpreter."""
        from pf_ray.engines.interpreter import vllm_python

        return {"kind": "vllm", "model": rewriter, "python": vllm_python(), "num_gpus": 0,
                "num_cpus": 1, "batch_size": self.cfg.rewrite_batch,
                "engine_kwargs": {"dtype": "float32", "enforce_eager": True,
                                  "max_model_len": 1024, "gpu_memory_utilization": 0.1,
                                  "max_num_seqs": 16}}

    def serve_fields(self, model: str) -> dict[str, Any]:
        """The S3 export on Ray Serve LLM (vLLM), its replicas in the vLLM venv."""
        from pf_ray.engines.interpreter import vllm_python

        return {"model": hf(model), "engine": "vllm", "python": vllm_python()}
