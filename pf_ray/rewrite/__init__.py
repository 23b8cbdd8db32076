"""Rewriting raw vision-language annotations with the rewriter (paper.md §4): PF-1M's first half.

Each input sample (image, instruction, raw annotation such as a VQA short answer or a list
of captions) goes through the rewriter prompt (:mod:`pf_ray.model.prompts`, the instruction
and the raw annotation as the "draft"); the revised response is the row's ``output``.
Engines (:mod:`engines`): ``flamingo`` (pf-ray's model in a GPU actor pool, batched),
``http`` (an OpenAI-compatible server), ``hf_vlm`` (a transformers image-text-to-text model
with pf-ray's batched generator) and ``vllm`` (the same model on vLLM through
``ray.data.llm``, a dataset stage instead of the actor pool: :mod:`vllm`). Outputs that show the rewriter's failure modes
(missing EOS, repetition loops, an ellipsis ending, nothing at all) are rejects with those
reasons (:mod:`checks`); the ``filter`` kind then scores what is kept.
"""
