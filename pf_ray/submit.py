"""``pf-ray submit``: send a job spec to a Ray cluster's Jobs API and follow it.

Why a command of its own when ``ray job submit --working-dir . -- pf-ray run SPEC`` works
too: the spec is validated *here*, before anything is uploaded (a typo costs seconds, not
a cluster start), and the runtime env is built from the spec:

* ``working_dir``: the folder holding the spec (default: the current directory), uploaded
  by Ray; the spec path is sent relative to it, so pipelines find the files they name;
* the package: when the ``pf_ray`` being run here is not inside the working dir, it goes
  along as a ``py_modules`` entry, so the driver and every worker run this code (``--no-
  package`` relies on the pf-ray installed in the cluster's image instead);
* environment variables by *name*: the storage credential variables the spec names
  (``storage.access_key_env`` ...), the standard S3 endpoint / region variables, the
  ``${VAR}`` names the spec files use (they are expanded again on the cluster) and any
  ``--env NAME``. Those set here are copied into ``runtime_env.env_vars``; only their
  names are ever printed (Ray's dashboard shows a job's runtime env to whoever can open
  it: on a shared cluster set credentials on the nodes instead and pass no ``--env``);
* where the driver runs: ``entrypoint_num_cpus`` 0 (as ``ray job submit``: the driver only
  orchestrates; on a 2-CPU head, a CPU held by it left the training stage's data pipeline
  waiting forever) and no GPU; if a node advertises the custom resource ``pf_driver`` (the
  CPU node groups of ``cluster/`` and ``infra/`` do), the entrypoint asks for one unit of
  it, so the driver lands on a CPU node and never holds a GPU node up.

The exit status is the job's: 0 SUCCEEDED, 1 FAILED or STOPPED (or the head unreachable),
2 the spec is wrong (nothing submitted).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pf_ray.config import load_spec, read_spec_file
from pf_ray.jobs import registry

DRIVER_RESOURCE = "pf_driver"  # declared by the CPU node groups in cluster/ and infra/
# env vars every S3 client reads besides the credentials a spec names
# (not AWS_PROFILE or PF_RAY_CACHE: a laptop's profile or cache path does not exist on the
# nodes; pass them with --env when they do)
STANDARD_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                "HF_TOKEN")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Submission:
    """What is sent: the entrypoint, the runtime env and where the driver may run."""

    entrypoint: str
    runtime_env: dict[str, Any]
    env_names: list[str] = field(default_factory=list)  # names only; values stay inside
    entrypoint_num_cpus: float = 0.0
    entrypoint_resources: dict[str, float] | None = None

    def describe(self) -> str:
        """A printable summary that never contains an env var's value."""
        modules = [Path(m).name for m in self.runtime_env.get("py_modules", [])]
        lines = [f"entrypoint: {self.entrypoint}",
                 f"working_dir: {self.runtime_env.get('working_dir')}",
                 f"py_modules: {', '.join(modules) or 'none (the working dir or the image)'}",
                 f"env vars passed (names only): {', '.join(self.env_names) or 'none'}",
                 f"driver: {self.entrypoint_num_cpus:g} CPU"
                 + (f", resources {self.entrypoint_resources}"
                    if self.entrypoint_resources else "")]
        return "\n".join(lines)


def spec_env_names(spec_path: Path, spec: Any) -> list[str]:
    """Env var names the spec depends on: ``${VAR}``s of its files, storage credentials,
    and every other ``*_env`` field (API keys of HTTP engines and answer sources...)."""
    names: list[str] = []
    for path in _spec_files(spec_path):
        names += _VAR.findall(path.read_text(encoding="utf-8"))
    for job in _jobs(spec):
        st = job.storage
        names += [st.access_key_env, st.secret_key_env, st.session_token_env]
        names += list((job.ray.runtime_env or {}).get("env_vars", {}))
        names += _env_fields(job.model_dump())
    return list(dict.fromkeys(n for n in names if n))


def _env_fields(value: Any) -> list[str]:
    """The values of every ``*_env`` key in a dumped spec (nested lists and dicts)."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in (
            [v] if k.endswith("_env") and isinstance(v, str) else _env_fields(v))]
    if isinstance(value, list):
        return [n for v in value for n in _env_fields(v)]
    return []


def _jobs(spec: Any) -> list[Any]:
    return [spec, *spec.jobs] if registry.is_pipeline(spec) else [spec]


def _spec_files(path: Path) -> list[Path]:
    """The spec file and, for a pipeline, every file it names (recursively)."""
    files, todo = [], [path]
    while todo:
        p = todo.pop()
        if p in files or not p.is_file():
            continue
        files.append(p)
        data = read_spec_file(p)
        if data.get("kind") == registry.PIPELINE:
            todo += [p.parent / j for j in data.get("jobs", []) if isinstance(j, str)]
    return files


def build_submission(spec_path: str | Path, overrides: Iterable[str] = (), *,
                     working_dir: str | Path | None = None, include_package: bool = True,
                     extra_env: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                     num_cpus: float = 0.0, driver_resource: str | None = None,
                     progress: bool = False) -> Submission:
    """Validate the spec here and build what :func:`submit` sends.

    Raises :class:`~pf_ray.config.SpecError` (or ``FileNotFoundError``) for a bad spec and
    ``ValueError`` when the spec is not inside ``working_dir``.
    """
    environ = os.environ if environ is None else environ
    overrides = list(overrides)
    path = Path(spec_path).resolve()
    spec = load_spec(path, overrides or None, env=environ)
    wd = Path(working_dir).resolve() if working_dir else Path.cwd().resolve()
    if not path.is_relative_to(wd):
        raise ValueError(f"{spec_path}: the spec must be inside the working dir {wd} (it is "
                         "uploaded with it); pass --working-dir")
    rel = path.relative_to(wd).as_posix()
    args = ["python", "-m", "pf_ray.cli", "run", rel, *overrides]
    if not progress:
        args.append("--no-progress")
    runtime_env: dict[str, Any] = {"working_dir": str(wd)}
    package = Path(__file__).resolve().parent
    if include_package and not package.is_relative_to(wd):
        runtime_env["py_modules"] = [str(package)]
    wanted = [*spec_env_names(path, spec), *STANDARD_ENV, *extra_env]
    names = [n for n in dict.fromkeys(wanted) if n in environ]
    if names:
        runtime_env["env_vars"] = {n: environ[n] for n in names}
    return Submission(entrypoint=shlex.join(args), runtime_env=runtime_env, env_names=names,
                      entrypoint_num_cpus=num_cpus,
                      entrypoint_resources={driver_resource: 1.0} if driver_resource else None)


def driver_resource_on(address: str) -> str | None:
    """``pf_driver`` if an alive node of the cluster advertises it, else None."""
    try:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")],
                           raise_on_missing_output=False)
    except Exception:  # an older head, no state API: the driver goes anywhere
        return None
    return DRIVER_RESOURCE if any(DRIVER_RESOURCE in (n.resources_total or {})
                                  for n in nodes) else None


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _explain(exc: Exception) -> str:
    text = str(exc)
    if "authentication" in text.lower() or "401" in text:
        text += ("\n  (the head uses token auth, Ray's default for `ray start --head`: run "
                 "with RAY_AUTH_MODE=token and the head's token in RAY_AUTH_TOKEN or "
                 "~/.ray/auth_token, or start the head with RAY_AUTH_MODE=disabled)")
    return text


def _follow(client: Any, job_id: str, out: Callable[[str], None]) -> None:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out(chunk)

    asyncio.run(tail())


def wait_for(client: Any, job_id: str, *, poll_s: float = 1.0,
             out: Callable[[str], None] = print) -> str:
    """Poll until the job ends; print each status change. Returns the final status."""
    last = None
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        if status != last:
            out(f"{job_id}: {status}")
            last = status
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def submit(spec_path: str, address: str, overrides: Iterable[str] = (), *, wait: bool = True,
           follow: bool = False, working_dir: str | None = None, include_package: bool = True,
           extra_env: Iterable[str] = (), num_cpus: float = 0.0,
           submission_id: str | None = None, driver_resource: str | None = "auto",
           log_tail: int = 60) -> int:
    """Validate, submit and (unless ``wait`` is False) wait for the job; the exit status."""
    from pf_ray.config import SpecError

    try:
        sub = build_submission(spec_path, overrides, working_dir=working_dir,
                               include_package=include_package, extra_env=extra_env,
                               num_cpus=num_cpus)
    except FileNotFoundError:
        print(f"{spec_path}: no such file", file=sys.stderr)
        return 2
    except (SpecError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        client = _client(address)
        resource = driver_resource_on(address) if driver_resource == "auto" \
            else driver_resource
        if resource:
            sub.entrypoint_resources = {resource: 1.0}
        print(sub.describe())
        job_id = client.submit_job(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env,
                                   submission_id=submission_id,
                                   entrypoint_num_cpus=sub.entrypoint_num_cpus,
                                   entrypoint_num_gpus=0,
                                   entrypoint_resources=sub.entrypoint_resources,
                                   metadata={"pf_ray_spec": Path(spec_path).name})
    except Exception as exc:  # unreachable head, auth, a rejected runtime env
        print(f"{spec_path}: cannot submit to {address}: {_explain(exc)}", file=sys.stderr)
        return 1
    print(f"submitted {job_id} to {address}")
    if not wait and not follow:
        print(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return 0
    try:
        if follow:
            _follow(client, job_id, lambda s: print(s, end="", flush=True))
        status = wait_for(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (ray job stop --address {address} "
              f"{job_id})", file=sys.stderr)
        return 1
    if status != "SUCCEEDED" and not follow:
        logs = client.get_job_logs(job_id).splitlines()[-log_tail:]
        print("\n".join(["--- last lines of the job's log ---", *logs]), file=sys.stderr)
    info = client.get_job_info(job_id)
    if status != "SUCCEEDED" and getattr(info, "message", None):
        print(f"{job_id}: {info.message}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
