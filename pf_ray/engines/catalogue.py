"""The built-in generation engines (one line per engine).

Adding an engine: a module that declares its :class:`~pf_ray.engines.registry.EngineDef`,
and one ``register`` line here. Specs with an ``engine:`` block accept it by its kind.
"""

from __future__ import annotations

from pf_ray.engines import flamingo, hf_vlm, http, vllm_vlm
from pf_ray.engines.registry import register

register(flamingo.ENGINE)
register(http.ENGINE)
register(hf_vlm.ENGINE)
register(vllm_vlm.ENGINE)
