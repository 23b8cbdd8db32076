"""Serving Clever Flamingo on Ray Serve: an OpenAI-compatible API with images and a chat page.

``spec``       the ``kind: serve`` spec (model folder and family, engine, replicas, batching,
               limits)
``api``        OpenAI request / response models and the error object (no Ray, no torch)
``images``     ``data:`` URIs and allow-listed http(s) image URLs, with size limits
``prepare``    requests -> checked plans -> what a generator or vLLM gets (the chat format)
``engine``     one replica's Flamingo model: batched generation with per-step events (no Ray)
``engine_vlm`` the same interface over an ``hf_vlm`` model (``engine: hf_vlm``)
``batching``   ``@serve.batch`` async generator: streaming and plain requests share batches
``front``      what every ingress checks first (key, body cap, errors, chat page, models)
``app``        the Serve deployment (FastAPI ingress, ``@serve.batch``); :mod:`pf_ray.apps`
               builds it
``llm``        ``engine: vllm``: pf-ray's front before Ray Serve LLM's ``LLMServer`` (vLLM)
``launch``     ``pf-ray serve`` / ``kind: serve``: start Serve and run the app
``smoke``      one image chat through the ``openai`` client (the quickstart's check)

Only ``batching``, ``front``, ``app``, ``llm``, ``launch`` and ``smoke`` import Ray (and only
``llm``'s model replicas import vLLM); the rest is tested without it (``batching`` needs no
Ray instance either).
"""
