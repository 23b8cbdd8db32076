"""Entry points that Ray imports by path: Serve's application builder.

``serve run pf_ray.apps:build_app spec=jobs/serve.yaml``, or ``import_path:
pf_ray.apps:build_app`` with ``args`` in a Serve config (``pf-ray serve`` writes one). It
sits at the CLI's layer because it reads spec files (:mod:`pf_ray.config`), as the CLI
does; the deployment itself is :mod:`pf_ray.serve.app`.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from pf_ray.config import load_spec
from pf_ray.serve.app import app_for
from pf_ray.serve.spec import ServeSpec


def spec_from_args(args: dict[str, Any]) -> ServeSpec:
    """``build_app`` arguments -> a spec: ``{"spec": PATH, "overrides": [...]}``, or the spec's
    fields inline (``kind`` optional), as ``serve run`` / a Serve config's ``args`` give them."""
    args = dict(args)
    if "spec" in args:
        path = str(args.pop("spec"))
        overrides = args.pop("overrides", None) or []
        if isinstance(overrides, str):
            overrides = overrides.split()
        overrides = [*overrides, *(f"{k}={v}" for k, v in args.items())]
        spec = load_spec(path, overrides)
    else:
        spec = ServeSpec.model_validate({"kind": "serve", **args})
    if not isinstance(spec, ServeSpec):
        raise ValueError(f"build_app: the spec is of kind {spec.kind!r}; allowed: 'serve'")
    return spec


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (``serve run pf_ray.apps:build_app spec=jobs/serve.yaml``
    or ``import_path: pf_ray.apps:build_app`` with ``args`` in a Serve config)."""
    return app_for(spec_from_args(args))
