"""Serving Clever Flamingo on Ray Serve: an OpenAI-compatible API with images and a chat page.

``spec``     the ``kind: serve`` spec (model folder, replicas, batching, limits)
``api``      OpenAI request / response models and the error object (no Ray, no torch)
``images``   ``data:`` URIs and allow-listed http(s) image URLs, with size limits
``prepare``  requests -> prompt token ids + images + a generation config (the chat format)
``engine``   one replica's model: batched generation with per-step events (no Ray)
``batching`` ``@serve.batch`` async generator: streaming and plain requests share batches
``app``      the Serve deployment (FastAPI ingress, ``@serve.batch``); :mod:`pf_ray.apps` builds it
``launch``   ``pf-ray serve`` / ``kind: serve``: start Serve and run the app
``smoke``    one image chat through the ``openai`` client (the quickstart's check)

Only ``batching``, ``app``, ``launch`` and ``smoke`` import Ray; the rest is tested without
it (``batching`` needs no Ray instance either).
"""
