"""The source adapter registry: adapters are records, the adapter list is derived from them.

A toy adapter for a format no built-in reads (CSV) is one module written to disk plus one
``register`` call; it then validates in an ingest spec, names its images through its
default pattern (or the spec's), and runs through the ingest job like any built-in.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

import pf_ray.data.sources as sources_pkg
from pf_ray.config import SpecError, parse_spec
from pf_ray.data.io import REJECTS, Dataset
from pf_ray.data.sources import Adapter, registry
from pf_ray.data.sources.fields import sample
from pf_ray.ingest.spec import SourceConfig
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

# The whole adapter: a reader for its file format, a converter, and its record.
TOY_MODULE = '''
"""Toy CSV questions: ``question_id,image_id,question,answer`` with a header line."""

from __future__ import annotations

import csv
import io
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pattern_image, sample, text_field
from pf_ray.specs import StorageConfig
from pf_ray.storage import read_bytes, resolve


def csv_records(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    fs, path = resolve(file, storage)
    rows = csv.DictReader(io.StringIO(read_bytes(fs, path).decode("utf-8")))
    return [(pos, {"id": row["question_id"], **row}) for pos, row in enumerate(rows)]


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not record.get("image_id"):
        raise RecordError("missing_field", "no 'image_id'")
    return sample(ctx, task="vqa", image=pattern_image(ctx, image_id=record["image_id"]),
                  turns=[{"role": "user", "content": text_field(record, "question")},
                         {"role": "assistant", "content": text_field(record, "answer")}],
                  meta={"image_id": record["image_id"]})


ADAPTER = Adapter("toy_csv", convert, "toy CSV questions (a test's adapter)",
                  reader=csv_records, image_pattern="img_{image_id}.png",
                  pattern_fields=("image_id",))
'''

TOY_CSV = """question_id,image_id,question,answer
q1,1,What colour is the square?,red
q2,2,How many circles?,3
q3,,Where is the image?,nowhere
q4,4,Is the file there?,no
"""


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The toy adapter's module, written to disk and registered: one file, one line."""
    (tmp_path / "toy_csv_adapter.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_csv_adapter")
    registry.register(module.ADAPTER)
    yield module
    registry.unregister("toy_csv")
    sys.modules.pop("toy_csv_adapter", None)


def ingest_spec(tmp_path: Path, images: dict[str, object] | None = None,
                **source: object) -> dict[str, object]:
    return {"kind": "ingest", "images": images or {}, "output": {"path": str(tmp_path / "out")},
            "ray": {"progress": False}, "rows_per_shard": 2,  # two units of one file
            "faults": {"max_reject_fraction": 1.0},  # the toy file is half rejects
            "source": {"adapter": "toy_csv", "path": str(tmp_path / "toy.csv"), **source}}


def test_toy_adapter_runs_through_the_ingest_job(toy: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "toy.csv").write_text(TOY_CSV)
    images = tmp_path / "images"
    images.mkdir()
    for image_id in (1, 2):
        Image.new("RGB", (8, 8), "red").save(images / f"img_{image_id}.png")
    (res,) = run_job(parse_spec(ingest_spec(tmp_path, image_root=str(images))),
                     executor="local")
    data = Dataset(res.root, StorageConfig())
    kept = {r["id"]: r for r in data.read().to_pylist()}
    rejected = {r["id"]: r["reason"] for r in data.read(REJECTS).to_pylist()}
    assert sorted(kept) == ["toy_csv:q1", "toy_csv:q2"]
    # q3 fails in the converter, q4 in the ingest job's image check (no img_4.png)
    assert rejected == {"toy_csv:q3": "missing_field", "toy_csv:q4": "image_missing"}
    assert kept["toy_csv:q1"]["image"] == str(images / "img_1.png")
    assert [t["content"] for t in kept["toy_csv:q2"]["conversations"]] == [
        "How many circles?", "3"]
    assert json.loads(kept["toy_csv:q1"]["meta"])["file"] == "toy.csv"
    assert res.manifest["totals"]["rows"] == 2 and res.manifest["totals"]["rejects"] == 2


def test_toy_adapter_takes_a_spec_image_pattern(toy: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "toy.csv").write_text(TOY_CSV)
    spec = parse_spec(ingest_spec(tmp_path, image_root="/imgs",
                                  image_pattern="{image_id:0>3}.jpg",
                                  images={"check": False}))
    (res,) = run_job(spec, executor="local")
    kept = Dataset(res.root, StorageConfig()).read().to_pylist()
    assert sorted(r["image"] for r in kept) == ["/imgs/001.jpg", "/imgs/002.jpg",
                                                "/imgs/004.jpg"]
    with pytest.raises(SpecError, match=r"field\(s\) \['qid'\]; allowed for toy_csv: "
                                        r"\['image_id'\]"):
        parse_spec(ingest_spec(tmp_path, image_pattern="{qid}.jpg"))


def test_spec_accepts_exactly_the_registered_adapters(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(ingest_spec(tmp_path))
    (problem,) = info.value.problems
    assert problem.startswith("source.adapter: received 'toy_csv'; allowed: ")
    for name in ("'llava_instruct'", "'vqav2'", "'refcocog'", "'alpaca_gpt4'"):
        assert name in problem
    assert problem.count(", ") == len(registry.adapters()) - 1
    schema = SourceConfig.model_json_schema()
    assert schema["properties"]["adapter"]["enum"] == list(registry.adapter_names())


def test_registered_toy_is_listed_and_unregistered_it_is_gone(toy: ModuleType) -> None:
    assert registry.get_adapter("toy_csv") is toy.ADAPTER
    assert "toy_csv" in registry.pattern_fields()
    assert "toy_csv" not in registry.scan()  # not a module of the package: registered only
    with pytest.raises(ValueError, match="'toy_csv' is registered already"):
        registry.register(Adapter("toy_csv", toy.convert, "another record, same name"))
    replaced = registry.register(Adapter("toy_csv", toy.convert, "replaced"), replace=True)
    assert registry.get_adapter("toy_csv") is replaced
    registry.unregister("toy_csv")
    with pytest.raises(ValueError, match=r"unknown source adapter 'toy_csv'; allowed: \["):
        registry.get_adapter("toy_csv")


def test_every_module_record_is_registered_once() -> None:
    """The scan finds each record declared in the package's modules, and nothing else."""
    declared: dict[str, Adapter] = {}
    for info in pkgutil.iter_modules(sources_pkg.__path__, sources_pkg.__name__ + "."):
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, Adapter):
                assert declared.setdefault(value.name, value) is value, value.name
    assert declared == registry.scan()
    assert {n: a for n, a in registry.adapters().items() if n in declared} == declared
    # every adapter, under its name (the ingest spec accepts exactly these)
    assert set(declared) == {
        "llava_instruct", "sharegpt", "ultrachat", "coco", "oasst1", "alpaca_gpt4",
        "gpteacher", "instructionwild", "vqav2", "gqa", "aokvqa", "textvqa", "textcaps",
        "coco_captions", "flickr30k", "clevr", "scienceqa", "image_paragraph", "webdataset",
        "image_folder_classes", "refcocog",
        # PF-1M's remaining datasets (issue 22)
        "ret3", "dior", "dota", "hrrsd", "spot_the_diff", "image_editing_requests",
        "levir_cc", "vqa_e", "ocr_vqa", "ocr_vqa_val", "ocr_vqa_test", "pointqa"}
    assert {n for n, a in declared.items() if a.draws} == {"refcocog", "pointqa"}
    assert registry.pattern_fields()["vqav2"] == ("split", "image_id")


def test_a_scan_refuses_two_records_under_one_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "twin_sources"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("a", "b"):
        (package / f"{module}.py").write_text(
            "from pf_ray.data.sources.adapter import Adapter\n"
            f"ADAPTER = Adapter('twin', lambda r, c: {{}}, 'declared in {module}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ValueError, match=r"'twin' is declared twice \(again in "
                                             r"twin_sources.b\)"):
            registry.scan("twin_sources")
    finally:
        for name in ("twin_sources", "twin_sources.a", "twin_sources.b"):
            sys.modules.pop(name, None)


def test_an_adapter_record_is_checked_when_declared() -> None:
    def convert(record: object, ctx: object) -> dict[str, object]:
        return sample(ctx, task="vqa", image=None, turns=[], meta={})  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=r"Adapter.name: received 'Toy-CSV'; allowed: lower"):
        Adapter("Toy-CSV", convert, "x")
    with pytest.raises(ValueError, match="description is empty"):
        Adapter("toy", convert, " ")
    with pytest.raises(ValueError, match="give both or neither"):
        Adapter("toy", convert, "x", image_pattern="{image_id}.jpg")
    with pytest.raises(ValueError, match=r"uses \['split'\]; allowed: \['image_id'\]"):
        Adapter("toy", convert, "x", image_pattern="{split}/{image_id}.jpg",
                pattern_fields=("image_id",))
