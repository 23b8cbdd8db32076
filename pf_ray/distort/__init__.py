"""Distortion: (distorted, original) training pairs for the rewriter (paper.md §1-2).

Three families: ``llm`` (an LLM instructed to compress a good answer rudely,
:mod:`llm_instructed`), ``augment`` (the 4-step random text augmentation, :mod:`augment`)
and ``boxes`` (COCO captions + serialised boxes for LLaVA-detail, :mod:`boxes`).
"""
