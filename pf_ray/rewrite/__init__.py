"""Rewriting raw vision-language annotations with the rewriter (paper.md §4): PF-1M's first half.

Each input sample (image, instruction, raw annotation such as a VQA short answer or a list
of captions) goes through the rewriter prompt (:mod:`pf_ray.model.prompts`, the instruction
and the raw annotation as the "draft"); the revised response is the row's ``output``.
Engines (:mod:`engines`): ``flamingo`` (pf-ray's model in a GPU actor pool, batched) and
``http`` (an OpenAI-compatible server). Outputs that show the rewriter's failure modes
(missing EOS, repetition loops, an ellipsis ending, nothing at all) are rejects with those
reasons (:mod:`checks`); the ``filter`` kind then scores what is kept.
"""
