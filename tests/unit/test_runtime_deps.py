"""Every third-party module pf_ray imports is installed by the runtime install.

README command 1 installs pf-ray without extras (``scripts/setup.sh``) and runs
``pf-ray quickstart``; a module that only the ``dev`` extra brings (pytest, openai once was)
works in CI's dev venv and crashes a new user's run. So: walk every import in ``pf_ray/``
(lazy ones inside functions too, as in ``test_architecture``), map each top-level module to
the distributions that provide it, and require one of them in the closure of pf-ray's
runtime requirements (``[project].dependencies``, their own requirements, the extras they
name), never only in an extra of pf-ray's.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE = Path(__file__).resolve().parents[2] / "pf_ray"

# Imports that are optional by design, each behind an extra and a clear error where used.
OPTIONAL: dict[str, str] = {
    "vllm": "the gpu extra (pip install -e '.[gpu]'); engines/vllm.py names it when missing",
    "mlflow": "the tracking extra; TrainSpec.tracking.mlflow names it when missing",
    "wandb": "the tracking extra; TrainSpec.tracking.wandb names it when missing",
}


def top_level_imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Top-level third-party module -> the pf_ray files that import it."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "pf_ray" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(root.parent)))
    return found


def requirement_closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Canonical names of ``dist`` and every installed distribution its requirements (with
    ``extras`` of its own) pull in, recursively; requirements whose marker is false for
    this interpreter (or that name an extra not asked for) are left out."""
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    stack = [(dist, extras)]
    while stack:
        name, asked = stack.pop()
        key = canonicalize_name(name)
        todo = {e for e in ({""} | set(asked)) if (key, e) not in seen}
        if not todo:
            continue
        seen.update((key, e) for e in todo)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed: nothing of it can satisfy an import
        names.add(key)
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not any(
                    req.marker.evaluate({"extra": e}) for e in todo):
                continue
            stack.append((req.name, frozenset(req.extras)))
    return names


def providers() -> dict[str, set[str]]:
    """Top-level module -> canonical names of the installed distributions providing it."""
    return {mod: {canonicalize_name(d) for d in dists}
            for mod, dists in metadata.packages_distributions().items()}


def test_closure_follows_extras_and_markers():
    runtime = requirement_closure("pf-ray")
    assert {"ray", "torch", "transformers", "pyarrow"} <= runtime
    # ray[serve] is asked for: fastapi (a serve-extra requirement of ray) is in the closure
    assert "fastapi" in runtime
    # the dev extra's tools are not runtime requirements
    assert "pytest" not in runtime
    assert "pytest" in requirement_closure("pf-ray", frozenset({"dev"}))


def test_every_import_of_pf_ray_is_a_runtime_requirement():
    runtime = requirement_closure("pf-ray")
    dev = requirement_closure("pf-ray", frozenset({"dev"}))
    by_module = providers()
    problems = []
    for module, files in sorted(top_level_imports().items()):
        if module in OPTIONAL:
            continue
        dists = by_module.get(module, set())
        if dists & runtime:
            continue
        where = ", ".join(sorted(files)[:3])
        if dists & dev:
            problems.append(f"{module} (imported by {where}) comes only with the dev extra "
                            f"({', '.join(sorted(dists))}): add it to [project].dependencies")
        else:
            problems.append(f"{module} (imported by {where}) is provided by "
                            f"{sorted(dists) or 'no installed distribution'}, which no runtime "
                            "requirement installs")
    assert not problems, "\n".join(problems)
