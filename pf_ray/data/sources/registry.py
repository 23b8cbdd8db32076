"""The registry of source adapters, derived from the records the adapter modules declare.

Every module of this package that declares an :class:`Adapter` at module level (``ADAPTER
= Adapter("vqav2", ...)``) is found by scanning the package (``pkgutil``), so a new format
is one new module and nothing else; a plugin or a test adds one from elsewhere with
:func:`register`. Everything that depends on the set of adapters reads it from here: the
names the ingest spec accepts, which of them take an ``image_pattern`` and with which
fields, whose rows are drawn. The scan runs on first use, not at import, so that the
helper modules can be imported without loading every adapter.
"""

from __future__ import annotations

import importlib
import pkgutil

from pf_ray.data.sources.adapter import Adapter

PACKAGE = __name__.rsplit(".", 1)[0]

_ADAPTERS: dict[str, Adapter] = {}
_scanned = False


def declared_in(module_name: str) -> list[Adapter]:
    """The adapter records a module declares at module level, in declaration order."""
    module = importlib.import_module(module_name)
    return [value for value in vars(module).values() if isinstance(value, Adapter)]


def scan(package: str = PACKAGE) -> dict[str, Adapter]:
    """The records of every module of ``package`` by name; two different records under one
    name are an error (a record imported into a second module counts once)."""
    path = importlib.import_module(package).__path__
    found: dict[str, Adapter] = {}
    for info in sorted(pkgutil.iter_modules(path, package + "."), key=lambda m: m.name):
        for adapter in declared_in(info.name):
            old = found.get(adapter.name)
            if old is not None and old is not adapter:
                raise ValueError(f"source adapter {adapter.name!r} is declared twice "
                                 f"(again in {info.name})")
            found[adapter.name] = adapter
    return found


def _load_builtin() -> None:
    """Scan once, before any registration, so built-ins and registered adapters never
    compete for a name silently."""
    global _scanned
    if not _scanned:
        _ADAPTERS.update(scan())
        _scanned = True


def register(adapter: Adapter, *, replace: bool = False) -> Adapter:
    """Add an adapter; another record under a taken name is an error unless ``replace``."""
    _load_builtin()
    old = _ADAPTERS.get(adapter.name)
    if old is not None and old is not adapter and not replace:
        raise ValueError(f"source adapter {adapter.name!r} is registered already "
                         f"({old.description})")
    _ADAPTERS[adapter.name] = adapter
    return adapter


def unregister(name: str) -> None:
    _load_builtin()
    _ADAPTERS.pop(name, None)


def adapters() -> dict[str, Adapter]:
    """Registered adapters by name (the built-in ones are scanned on first use)."""
    _load_builtin()
    return dict(_ADAPTERS)


def adapter_names() -> tuple[str, ...]:
    return tuple(adapters())


def get_adapter(name: str) -> Adapter:
    found = adapters().get(name)
    if found is None:
        raise ValueError(f"unknown source adapter {name!r}; allowed: {sorted(_ADAPTERS)}")
    return found


def pattern_fields() -> dict[str, tuple[str, ...]]:
    """The adapters that name images from a record's ids, with the fields a
    ``source.image_pattern`` may use."""
    return {name: a.pattern_fields for name, a in adapters().items() if a.pattern_fields}
