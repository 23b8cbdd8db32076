"""Import rules: the layer map, no stage importing another, no cycle, Ray at the edges.

The layer map (docs/architecture.md), each layer importing only its own layer and those
below it::

    cli / quickstart / apps -> config / submit -> kinds -> stages -> jobs
      -> engines / scorers / steps / model / metrics -> data -> storage -> specs / faults

Stages are ingest, distort, rewrite, filters, eval, train, serve, export and report; a stage
never imports another stage (what two stages share lives below them). Every import counts,
those inside functions too: a lazy import is still a dependency. The one exception is the
jobs registry loading the catalogue of kinds (``pf_ray.kinds``) by name, the way a plugin
system loads entry points: it is not an import statement, so it is not seen here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pf_ray"

# The modules allowed to import ray: the step adapters (map_batches, ray.data.llm), the
# jobs runner, training's launch and loop (and, later, the serve app).
RAY_EDGES = {
    "pf_ray.steps.ray_adapter", "pf_ray.engines.vllm", "pf_ray.jobs.runner",
    "pf_ray.train.launch", "pf_ray.train.loop",
    "pf_ray.train.tracking",  # Ray's setup_mlflow / setup_wandb, called in the loop
    "pf_ray.submit",  # Ray's JobSubmissionClient (pf-ray submit)
}
RAY_EDGE_PACKAGES = ("pf_ray.serve",)
RAY_EDGES |= {"pf_ray.apps"}  # Serve's application builder (imported by path by Ray)

# Top to bottom; a folder (or top-level module) may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pf_ray.cli", "pf_ray.quickstart", "pf_ray.apps", "pf_ray.specdoc"),
    ("pf_ray.config", "pf_ray.submit"),
    ("pf_ray.kinds",),
    ("pf_ray.ingest", "pf_ray.distort", "pf_ray.rewrite", "pf_ray.filters", "pf_ray.eval",
     "pf_ray.train", "pf_ray.serve", "pf_ray.export", "pf_ray.report"),
    ("pf_ray.jobs",),
    ("pf_ray.engines", "pf_ray.scorers", "pf_ray.steps", "pf_ray.model", "pf_ray.metrics"),
    ("pf_ray.data",),
    ("pf_ray.storage",),
    ("pf_ray.specs", "pf_ray.faults"),
)
STAGES = frozenset(LAYERS[3])


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module_name(path, root).split(".")
                pkg = pkg[: len(pkg) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, base] if base else pkg)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def all_modules(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in root.rglob("*.py")}


def folder_of(module: str) -> str:
    """The node of the folder graph: ``pf_ray.<folder>`` (top-level modules are their own)."""
    return ".".join(module.split(".")[:2])


def folder_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    known = {folder_of(m) for m in modules}
    graph: dict[str, set[str]] = {f: set() for f in known}
    for mod, deps in modules.items():
        for dep in deps:
            if folder_of(dep) in known and folder_of(dep) != folder_of(mod):
                graph[folder_of(mod)].add(folder_of(dep))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def ray_offenders(modules: dict[str, set[str]]) -> list[str]:
    return sorted(mod for mod, deps in modules.items()
                  if any(d == "ray" or d.startswith("ray.") for d in deps)
                  and mod not in RAY_EDGES and not mod.startswith(RAY_EDGE_PACKAGES))


def layer_offenders(modules: dict[str, set[str]],
                    layers: tuple[tuple[str, ...], ...] = LAYERS,
                    stages: frozenset[str] = STAGES) -> list[str]:
    """``"module -> import (why)"`` for each import against the layer map."""
    rank = {folder: k for k, group in enumerate(layers) for folder in group}
    found = []
    for mod, deps in modules.items():
        here = folder_of(mod)
        for dep in sorted(deps):
            there = folder_of(dep)
            if there == here or here not in rank or there not in rank:
                continue
            if here in stages and there in stages:
                found.append(f"{mod} -> {dep} (a stage importing another stage)")
            elif rank[there] < rank[here]:
                found.append(f"{mod} -> {dep} (a layer importing one above it)")
    return sorted(found)


def test_every_folder_has_a_layer() -> None:
    known = {f for group in LAYERS for f in group}
    folders = {folder_of(m) for m in all_modules()} - {"pf_ray"}
    assert folders <= known, f"folders missing from LAYERS: {sorted(folders - known)}"


def test_imports_follow_the_layer_map() -> None:
    assert layer_offenders(all_modules()) == []


def test_the_layer_map_catches_a_planted_import(tmp_path: Path) -> None:
    """A planted stage-to-stage import and an upward import are both found."""
    import shutil

    root = tmp_path / "pf_ray"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert layer_offenders(all_modules(root)) == []
    (root / "rewrite" / "planted.py").write_text("def f():\n    from pf_ray.eval import spec\n")
    (root / "data" / "planted.py").write_text("from pf_ray.model import config\n")
    assert layer_offenders(all_modules(root)) == [
        "pf_ray.data.planted -> pf_ray.model (a layer importing one above it)",
        "pf_ray.data.planted -> pf_ray.model.config (a layer importing one above it)",
        "pf_ray.rewrite.planted -> pf_ray.eval (a stage importing another stage)",
        "pf_ray.rewrite.planted -> pf_ray.eval.spec (a stage importing another stage)",
    ]


def test_no_cycle_between_folders() -> None:
    graph = folder_graph(all_modules())
    assert {"pf_ray.jobs", "pf_ray.storage", "pf_ray.distort"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between folders: " + " -> ".join(cycle or [])


def test_ray_is_imported_only_at_the_edges() -> None:
    assert ray_offenders(all_modules()) == []


def test_ground_floor_imports_nothing_above_it() -> None:
    modules = all_modules()
    for ground in ("pf_ray.specs", "pf_ray.faults"):
        assert not {d for d in modules[ground] if d.startswith("pf_ray")}, ground
    assert {d for d in modules["pf_ray.storage"] if d.startswith("pf_ray.")} <= {
        "pf_ray.specs", "pf_ray.specs.StorageConfig", "pf_ray.faults",
        "pf_ray.faults.StorageUnavailable"}  # the floor below it: settings and fault kinds


def test_the_rules_catch_violations(tmp_path: Path) -> None:
    """A fake tree with a lazy cycle and a stage importing ray inside a function."""
    root = tmp_path / "pf_ray"
    for folder, body in {"a": "def f():\n    from pf_ray.b import x\n",
                         "b": "from ..a import y\n\ndef g():\n    import ray.data\n"}.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
        (root / folder / "m.py").write_text(body)
    modules = all_modules(root)
    assert modules["pf_ray.b.m"] >= {"pf_ray.a", "pf_ray.a.y", "ray.data"}
    assert find_cycle(folder_graph(modules)) in (["pf_ray.a", "pf_ray.b", "pf_ray.a"],
                                                  ["pf_ray.b", "pf_ray.a", "pf_ray.b"])
    assert ray_offenders(modules) == ["pf_ray.b.m"]


# ------------------------------------------------ inside pf_ray.data.sources (module level)

SOURCES = "pf_ray.data.sources"
# The helpers every adapter builds on; they import only each other (and what is below the
# folder). The registry and the unit reader sit above the adapters; the registry finds the
# adapters' records by scanning the package, so it imports none of them by name.
SOURCE_HELPERS = {f"{SOURCES}.{m}" for m in ("errors", "files", "readers", "fields", "turns",
                                             "templates", "adapter", "image_size")}
SOURCE_TOP = {SOURCES, f"{SOURCES}.registry", f"{SOURCES}.source_reader"}


def module_graph(modules: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """Import edges between the modules of ``package`` (a ``from pkg import mod`` counts
    as an edge to the module and to the package)."""
    inside = {m for m in modules if m == package or m.startswith(package + ".")}
    return {m: {d for d in modules[m] if d in inside and d != m} for m in inside}


def test_sources_modules_have_no_cycle_and_keep_their_layers() -> None:
    graph = module_graph(all_modules(), SOURCES)
    assert set(graph) >= SOURCE_HELPERS | SOURCE_TOP, sorted(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in pf_ray.data.sources: " + " -> ".join(cycle or [])
    adapters = set(graph) - SOURCE_HELPERS - SOURCE_TOP
    assert {f"{SOURCES}.vqav2", f"{SOURCES}.llava", f"{SOURCES}.coco"} <= adapters
    for helper in SOURCE_HELPERS:
        assert graph[helper] <= SOURCE_HELPERS, (helper, graph[helper] - SOURCE_HELPERS)
    for adapter in adapters:
        assert not graph[adapter] & SOURCE_TOP, (adapter, graph[adapter] & SOURCE_TOP)
    for top in SOURCE_TOP:
        assert not graph[top] & adapters, (top, graph[top] & adapters)


def test_the_module_rules_catch_a_helper_importing_an_adapter(tmp_path: Path) -> None:
    """A fake sources folder whose field helpers import an adapter that imports them."""
    root = tmp_path / "pf_ray"
    folder = root / "data" / "sources"
    folder.mkdir(parents=True)
    for init in (root, root / "data", folder):
        (init / "__init__.py").write_text("")
    (folder / "fields.py").write_text("from pf_ray.data.sources.vqav2 import DEFAULT\n")
    (folder / "vqav2.py").write_text("from pf_ray.data.sources.fields import sample\n")
    graph = module_graph(all_modules(root), SOURCES)
    assert find_cycle(graph) in ([f"{SOURCES}.fields", f"{SOURCES}.vqav2", f"{SOURCES}.fields"],
                                 [f"{SOURCES}.vqav2", f"{SOURCES}.fields", f"{SOURCES}.vqav2"])
    assert graph[f"{SOURCES}.fields"] - SOURCE_HELPERS == {f"{SOURCES}.vqav2"}
