"""The spec reference is generated from the spec models and the committed page matches it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from pf_ray import specdoc
from pf_ray.cli import build_parser
from pf_ray.jobs import registry
from pf_ray.jobs.registry import JobKind
from pf_ray.specs import SpecBase, Strict

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "spec-reference.md"


class Inner(Strict):
    """Decoding of a toy engine. A second paragraph that the page leaves out.

    Not shown.
    """

    max_new_tokens: int = Field(128, ge=1, description="tokens per answer")
    temperature: float = 0.0


class LocalEngine(Strict):
    kind: Literal["local"]
    path: str = Field(..., description="a folder | or a URI")


class RemoteEngine(Strict):
    kind: Literal["remote"]
    url: str
    timeout_s: float = Field(30.0, gt=0)


class Item(Strict):
    name: str
    weight: float = 1.0


class ToySpec(SpecBase):
    """A toy kind for the generator (see ``pf_ray.specdoc``): paper.md §5.3 is cited."""

    kind: Literal["toy"]
    decoding: Inner = Field(default_factory=lambda: Inner(max_new_tokens=256))
    engine: Annotated[LocalEngine | RemoteEngine, Field(discriminator="kind")] | None = None
    items: list[Item] = Field(default_factory=list, description="weighted items")
    per_source: dict[str, Item] = Field(default_factory=dict)


def _rows(model: type[BaseModel]) -> dict[str, specdoc.Row]:
    rows = specdoc.field_rows(model, skip=frozenset(SpecBase.model_fields))
    return {r.path + (f" [{r.when}]" if r.when else ""): r for r in rows}


def test_committed_page_is_what_the_code_generates() -> None:
    expected = specdoc.render()
    assert PAGE.exists(), f"{PAGE} is missing: run `{specdoc.COMMAND}`"
    assert PAGE.read_text(encoding="utf-8") == expected, (
        f"docs/spec-reference.md differs from the spec models: run `{specdoc.COMMAND}` "
        "from the repository root and commit the page")


def test_every_field_gets_a_row_with_type_default_and_description() -> None:
    rows = _rows(ToySpec)
    assert rows["decoding"].default == "(keys below)"
    assert rows["decoding"].description == "Decoding of a toy engine. A second paragraph " \
                                           "that the page leaves out."
    # the parent's default instance wins over the nested class's default
    assert rows["decoding.max_new_tokens"].default == "`256`"
    assert rows["decoding.max_new_tokens"].type == "int (>= 1)"
    assert rows["decoding.temperature"] == specdoc.Row("decoding.temperature", "float",
                                                       "`0.0`", "")
    assert rows["items"].type == "list[object]" and rows["items"].default == "`[]`"
    assert rows["items[].name"].default == "required"
    assert rows["per_source.<name>.weight"].default == "`1.0`"


def test_a_discriminated_union_lists_each_variant_tag_first() -> None:
    rows = specdoc.field_rows(ToySpec, skip=frozenset(SpecBase.model_fields))
    paths = [(r.path, r.when) for r in rows]
    engine = next(r for r in rows if r.path == "engine")
    assert engine.type == 'object (kind: "local" | "remote") | null'
    local = paths.index(("engine.kind", "engine.kind: local"))
    assert paths[local + 1] == ("engine.path", "engine.kind: local")
    remote = paths.index(("engine.kind", "engine.kind: remote"))
    assert paths[remote + 1:remote + 3] == [("engine.url", "engine.kind: remote"),
                                            ("engine.timeout_s", "engine.kind: remote")]
    assert next(r for r in rows if r.path == "engine.timeout_s").type == "float (> 0)"


def test_table_cells_escape_pipes_and_cite_the_paper_page() -> None:
    page = specdoc.render({"toy": ToySpec})
    assert "| a folder \\| or a URI |" in page
    assert "[paper §5.3](paper.md#53-captions) is cited" in page
    assert "`pf_ray.specdoc`" in page and "``" not in page
    assert "## Keys shared by every kind" in page and "`faults.retries`" in page


@pytest.fixture
def toy_kind() -> Iterator[None]:
    registry.register(JobKind("toy", ToySpec, run=lambda spec, executor=None: None))
    yield
    registry.unregister("toy")


def test_the_page_follows_the_registry(toy_kind: None) -> None:
    """A kind registered anywhere appears: the generator reads the registry, not paths."""
    page = specdoc.render()
    assert "- [kind: toy](#kind-toy)" in page and "\n## kind: toy\n" in page
    for name in registry.kind_names():
        assert f"\n## kind: {name}\n" in page


def test_the_cli_command_writes_the_page(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "ref.md"
    args = build_parser().parse_args(["spec-reference", "--output", str(out)])
    assert args.fn(args) == 0
    assert out.read_text(encoding="utf-8") == specdoc.render()
    assert "written" in capsys.readouterr().out
    args = build_parser().parse_args(["spec-reference"])
    assert args.fn(args) == 0
    assert capsys.readouterr().out == specdoc.render()
