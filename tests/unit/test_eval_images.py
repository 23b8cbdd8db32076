"""Eval items with two images (a change caption's before and after image): items keep every
image; the ``model`` source's prompt marks both in its one human turn and the generator gets
both, in the row's order (the real tiny model, a recording generator around it); an
unreadable second image is a reject naming image 2; a dataset written before
``extra_images`` existed still reads (one image per item)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, REJECT_SCHEMA, SAMPLE_SCHEMA, to_table
from pf_ray.engines.flamingo import FlamingoGenerator
from pf_ray.eval import answers
from pf_ray.eval.items import plan_units, read_items
from pf_ray.model.tokenizer import ENDOFCHUNK_TOKEN, MEDIA_TOKEN
from pf_ray.specs import StorageConfig
from pf_ray.steps.local import run_local

RED, BLUE = (220, 20, 20), (20, 20, 220)
QUESTION = "What changed between the two pictures?"


def png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def colour_of(img: Image.Image) -> tuple[int, int, int]:
    return img.convert("RGB").getpixel((3, 3))  # type: ignore[return-value]


def write_samples(root: Path, rows: list[dict[str, Any]], schema: pa.Schema = SAMPLE_SCHEMA
                  ) -> str:
    """A committed sample dataset of ``rows`` (``schema``: the columns written)."""
    ds = Dataset(str(root), StorageConfig())
    table = to_table({c: [r.get(c) for r in rows] for c in schema.names}, schema)
    ds.write_data("u-0.parquet", table, REJECT_SCHEMA.empty_table())
    ds.commit("u-0", {"unit": "u", "rows": len(rows), "rejects": 0, "counts": {},
                      "rejects_per_reason": {}, "files": ["u-0.parquet"]})
    return str(root)


def change_row(key: str, before: str, after: dict[str, Any] | None) -> dict[str, Any]:
    """A change-captioning sample: the before image by reference, the after one in
    ``extra_images`` (None: a one-image row)."""
    return {"id": f"cc:{key}", "source": "cc", "task": "change_caption", "image": before,
            "image_bytes": None, "extra_images": None if after is None else [after],
            "conversations": [{"role": "user", "content": f"<image>\n<image>\n{QUESTION}"},
                              {"role": "assistant", "content": "The square turned blue."}],
            "boxes": None, "meta": "{}"}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pictures")
    (root / "red.png").write_bytes(png(RED))
    return {"red": str(root / "red.png"), "blue": png(BLUE),
            "missing": str(root / "never_written.png")}


def spec_for(path: str, out: Path, **source: Any) -> Any:
    return parse_spec({"kind": "eval", "output": {"path": str(out)},
                       "decoding": {"max_new_tokens": 4},
                       "sets": [{"name": "CC", "path": path, "metric": "rouge_l"}],
                       "sources": [{"kind": "model", "name": "m", "model": "/m", **source}]})


def items(spec: Any) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    for u in plan_units(spec)[0]:
        for k, v in read_items(**u.params).items():
            rows.setdefault(k, []).extend(v)
    return rows


class Recording(FlamingoGenerator):
    """pf-ray's generator over the in-memory tiny model, recording what it is given."""

    model_and_tokenizer: tuple[Any, Any] | None = None
    seen: list[tuple[list[int], list[Any]]] = []

    @classmethod
    def of(cls, fields: Any, decoding: Any, storage: Any) -> Recording:  # type: ignore[override]
        assert cls.model_and_tokenizer is not None
        model, tok = cls.model_and_tokenizer
        return cls(model=model, tokenizer=tok, decoding=decoding)

    def generate_ids(self, prompts: Any, images: Any, stops: Any, **kw: Any) -> Any:
        Recording.seen.extend((list(p), list(i)) for p, i in zip(prompts, images, strict=True))
        return super().generate_ids(prompts, images, stops, **kw)  # the real model runs


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from pf_ray.model.loading import build_model, model_tokenizer

    return build_model("tiny", seed=0).eval(), model_tokenizer("tiny")


@pytest.fixture
def recording(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> type[Recording]:
    Recording.model_and_tokenizer, Recording.seen = tiny, []
    monkeypatch.setattr(answers, "FlamingoGenerator", Recording)
    return Recording


def test_items_keep_every_image(pictures: dict[str, Any], tmp_path: Path) -> None:
    path = write_samples(tmp_path / "cc", [
        change_row("two", pictures["red"], {"image": None, "image_bytes": pictures["blue"]}),
        change_row("one", pictures["red"], None)])
    rows = items(spec_for(path, tmp_path / "out"))
    by = dict(zip(rows["item"], rows["extra_images"], strict=True))
    assert by["cc:two"] == [{"image": None, "image_bytes": pictures["blue"]}]
    assert by["cc:one"] is None
    assert set(rows["image"]) == {pictures["red"]} and set(rows["instruction"]) == {QUESTION}


def test_an_older_dataset_without_extra_images_still_reads(
        pictures: dict[str, Any], tmp_path: Path, recording: type[Recording]) -> None:
    old = pa.schema([f for f in SAMPLE_SCHEMA if f.name != "extra_images"])
    path = write_samples(tmp_path / "old", [change_row("old", pictures["red"], None)], old)
    rows = items(spec_for(path, tmp_path / "out"))
    assert rows["extra_images"] == [None] and rows[REJECT_REASON] == [None]
    # the answer step reads it too (one image, one marker)
    out = run_local(answers.answer_steps(spec_for(path, tmp_path / "out")),
                    {k: v for k, v in rows.items() if k != "extra_images"})
    assert out[REJECT_REASON] == [None] and isinstance(out["output"][0], str)
    ((ids, images),) = recording.seen
    media = recording.model_and_tokenizer[1].convert_tokens_to_ids(MEDIA_TOKEN)
    assert ids.count(media) == 1 and [colour_of(i) for i in images] == [RED]


@pytest.mark.parametrize("prompt", ["chat", "rewrite"])
def test_the_model_source_gets_both_images_in_order(
        pictures: dict[str, Any], tmp_path: Path, recording: type[Recording],
        prompt: str) -> None:
    path = write_samples(tmp_path / "cc", [
        change_row("two", pictures["red"], {"image": None, "image_bytes": pictures["blue"]})])
    spec = spec_for(path, tmp_path / "out", prompt=prompt)
    out = run_local(answers.answer_steps(spec), items(spec))
    assert out[REJECT_REASON] == [None] and isinstance(out["output"][0], str)
    ((ids, images),) = recording.seen
    tok = recording.model_and_tokenizer[1]
    # two images in the order of the row: the before (red, by reference), the after (blue)
    assert [colour_of(i) for i in images] == [RED, BLUE]
    # two markers, both in the one human turn, after its text, each named (the tiny model:
    # next_image)
    assert ids.count(tok.convert_tokens_to_ids(MEDIA_TOKEN)) == 2
    text = tok.decode(ids)
    pair = MEDIA_TOKEN + ENDOFCHUNK_TOKEN
    assert f"### Human: {QUESTION}\nImage 1: {pair}, Image 2: {pair}\n### Assistant" in text
    assert text.count(MEDIA_TOKEN) == 2
    if prompt == "rewrite":  # the raw annotation is the draft, after both images
        assert text.index("(Drafted Response) The square turned blue.") > text.rindex(pair)


def test_an_unreadable_second_image_is_a_reject_naming_it(
        pictures: dict[str, Any], tmp_path: Path, recording: type[Recording]) -> None:
    path = write_samples(tmp_path / "cc", [
        change_row("bad", pictures["red"], {"image": pictures["missing"], "image_bytes": None}),
        change_row("good", pictures["red"], {"image": None, "image_bytes": pictures["blue"]})])
    spec = spec_for(path, tmp_path / "out")
    rows = items(spec)
    out = run_local(answers.answer_steps(spec), rows)
    by = {item: k for k, item in enumerate(rows["item"])}
    bad, good = by["cc:bad"], by["cc:good"]
    assert out[REJECT_REASON][bad] == "image_missing"
    assert out[REJECT_DETAIL][bad].startswith("image 2 of 2: ")
    assert "never_written.png" in out[REJECT_DETAIL][bad]
    assert out[REJECT_REASON][good] is None and isinstance(out["output"][good], str)
    assert len(recording.seen) == 1  # only the readable row reached the model
