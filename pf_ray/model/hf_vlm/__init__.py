"""The ``hf_vlm`` model family: any transformers image-text-to-text model
(``AutoModelForImageTextToText`` + ``AutoProcessor``), beside pf-ray's own Flamingo family.

``family``      which family a spec's model is, hf_vlm presets, folder checks
``tiny``        small Idefics3 (SmolVLM layout) and LLaVA models built offline from configs
``parts``       per-part trainability (vision, connector, LM LoRA, LM embeddings, LM full)
``prompts``     the rewriter's and the chat's messages through the processor's chat template
``load``        a folder (or URI, or preset) -> (model, processor), its adapter applied
``generate``    per-row batched generation with per-step events (pf-ray's Serve app)

pf-ray's own batched generator over these models is the ``hf_vlm`` engine
(:mod:`pf_ray.engines.hf_vlm`); vLLM runs them through ``ray.data.llm`` and Ray Serve LLM.
"""
