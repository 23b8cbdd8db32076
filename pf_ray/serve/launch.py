"""``kind: serve`` and ``pf-ray serve``: start Ray Serve's HTTP proxy and run the app.

Locally (no ``ray.address`` / ``RAY_ADDRESS``) Ray lives in this process, so the command
keeps serving until interrupted. On a cluster, ``wait: false`` (``pf-ray serve --detach``)
deploys and returns, and the app keeps running there, as with ``serve deploy``.
:func:`serve_config` writes the same deployment as a Serve config file (for ``serve run
CONFIG``, ``serve deploy CONFIG`` and KubeRay's ``RayService.serveConfigV2``).
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from pf_ray.serve.spec import ServeSpec

IMPORT_PATH = "pf_ray.apps:build_app"


@dataclass
class ServeResult:
    app_name: str
    model: str
    url: str
    stopped: bool

    def summary(self) -> str:
        state = "stopped" if self.stopped else "running"
        return f"serve {self.app_name}: {self.model} at {self.url} ({state})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "serve", "app_name": self.app_name, "model": self.model,
                "url": self.url, "stopped": self.stopped}


def base_url(spec: ServeSpec, host: str | None = None) -> str:
    host = host or ("127.0.0.1" if spec.host in ("0.0.0.0", "::") else spec.host)
    return f"http://{host}:{spec.port}{spec.route_prefix.rstrip('/')}"


def start(spec: ServeSpec) -> str:
    """Deploy the app on the connected Ray (starting Serve if needed); returns its URL."""
    from ray import serve

    from pf_ray.serve.app import app_for

    serve.start(http_options={"host": spec.host, "port": spec.port})
    serve.run(app_for(spec), name=spec.app_name, route_prefix=spec.route_prefix,
              blocking=False)
    port = proxy_port(spec.port)
    if port != spec.port:  # Serve was already running on this cluster: it keeps its proxy
        print(f"Serve already runs on this Ray cluster with its HTTP proxy on port {port}; "
              f"the app is served there (port {spec.port} of the spec is not used)",
              file=sys.stderr, flush=True)
    return base_url(spec.model_copy(update={"port": port}))


def proxy_port(default: int) -> int:
    """The port of the HTTP proxy Serve runs now (it keeps the one it started with)."""
    try:
        from ray.serve.context import _get_global_client

        return int(_get_global_client().http_config.port)
    except Exception:  # a private API: fall back to what was asked for
        return default


def serve_running() -> bool:
    """Whether a Serve controller already runs on the connected cluster."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client() is not None
    except Exception:
        return False


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (a container stop) end the wait (even when started in the
    background, where a shell leaves SIGINT ignored)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the handlers alone
        pass


def run_serve(spec: ServeSpec, *, executor: str = "ray") -> ServeResult:
    if executor != "ray":
        raise ValueError("kind serve runs on Ray Serve; use executor 'ray'")
    from ray import serve

    if spec.wait:
        _stop_on_signals()  # before start: a Ctrl-C while the model loads stops too
    url = start(spec)
    print(f"serving {spec.model_name!r}: chat page {url}/, OpenAI API {url}/v1"
          + (" (Ctrl-C stops)" if spec.wait else ""), file=sys.stderr, flush=True)
    stopped = False
    if spec.wait:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(f"stopping {spec.app_name!r}", file=sys.stderr, flush=True)
            serve.delete(spec.app_name)
            stopped = True
    return ServeResult(spec.app_name, spec.model_name, url, stopped)


def serve_config(spec: ServeSpec) -> dict[str, Any]:
    """A Serve config (``serve build`` format) that deploys ``spec``'s app."""
    args = spec.model_dump(mode="json", exclude={"kind", "wait", "name"}, exclude_defaults=True)
    args["model"] = spec.model
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": spec.host, "port": spec.port},
        "applications": [{"name": spec.app_name, "route_prefix": spec.route_prefix,
                          "import_path": IMPORT_PATH, "args": args}],
    }
