"""The ``hf_vlm`` model family: any transformers image-text-to-text model
(``AutoModelForImageTextToText`` + ``AutoProcessor``), beside pf-ray's own Flamingo family.

``family``      which family a model folder or preset is (:func:`family.family_of`)
``tiny``        small Idefics3 (SmolVLM layout) and LLaVA models built offline from configs
``parts``       per-part trainability (vision, connector, LM LoRA, LM embeddings, LM full)
``prompts``     the rewriter's and the chat's messages through the processor's chat template
``generate``    pf-ray's own batched generator over an ``hf_vlm`` model
"""
