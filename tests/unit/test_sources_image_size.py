"""The shared image-size helper of the source adapters (pf_ray/data/sources/image_size.py)
and the line between a bad record and an outage in ``SourceReader.read``: a record that
cannot be converted is a reject; a store that cannot be read (refused connection, timeout,
throttling, refused credentials) fails the unit and is never committed as a reject."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image
from vl_sources import check, read, rejects, rows, save
from vl_sources_remote_sensing import write_dota
from vl_sources_vqa_more import write_pointqa

from pf_ray.data.sources import Adapter, SourceReader, registry
from pf_ray.data.sources import image_size as image_size_module
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, sample
from pf_ray.data.sources.image_size import PREFIXES, image_size
from pf_ray.faults import StorageUnavailable, is_infrastructure_fault
from pf_ray.specs import StorageConfig


def png_bytes(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int], **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, format="JPEG", quality=95, **save)
    return buf.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the helper


def test_png_size_from_its_header_only(tmp_path: Path) -> None:
    head = save(tmp_path / "head.png", png_bytes((321, 123))[:40])  # no pixel data at all
    assert image_size(str(head)) == (321, 123)
    assert image_size(str(save(tmp_path / "whole.png", png_bytes((5, 7)))), None) == (5, 7)


def test_jpeg_size_from_a_prefix(tmp_path: Path) -> None:
    data = jpeg_bytes((640, 480))
    assert len(data) > 20000
    cut = save(tmp_path / "head.jpg", data[:2000])  # the markers up to SOS, no scan data
    assert image_size(str(cut), StorageConfig()) == (640, 480)


def test_jpeg_whose_size_lies_past_the_first_prefix(tmp_path: Path) -> None:
    """A 200 KB ICC profile puts the SOF marker past the first 64 KiB: a longer prefix is
    read, not the whole file."""
    data = jpeg_bytes((900, 600), icc_profile=bytes(200_000))
    assert data.find(b"\xff\xc0") > PREFIXES[0]
    assert image_size(str(save(tmp_path / "icc.jpg", data))) == (900, 600)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "image_empty"),
    (b"not an image", "image_not_image"),
    (bytes(range(256)) * 300, "image_not_image"),  # garbage past the first prefix
    (png_bytes((30, 20))[:10], "image_not_image"),  # cut inside the signature
    (png_bytes((30, 20))[:20], "image_corrupt"),  # a PNG cut inside its IHDR
    (jpeg_bytes((300, 200), icc_profile=bytes(200_000))[:70_000], "image_corrupt"),
])
def test_unreadable_headers_are_the_records(tmp_path: Path, data: bytes, reason: str) -> None:
    bad = save(tmp_path / "bad.img", data)
    with pytest.raises(RecordError) as info:
        image_size(str(bad))
    assert info.value.reason == reason
    assert str(bad) in info.value.detail


def test_missing_file_is_image_missing(tmp_path: Path) -> None:
    with pytest.raises(RecordError) as local:
        image_size(str(tmp_path / "gone.png"))
    assert local.value.reason == "image_missing"
    with pytest.raises(RecordError) as folder:
        image_size(str(tmp_path))
    assert folder.value.reason == "image_missing"
    # through fsspec, whose "not found" is confirmed with get_file_info first
    with pytest.raises(RecordError) as remote:
        image_size(f"memory://{tmp_path.name}/gone.png")
    assert remote.value.reason == "image_missing"


def test_fsspec_image(tmp_path: Path) -> None:
    with fsspec.open(f"memory://{tmp_path.name}/x.png", "wb") as f:
        f.write(png_bytes((12, 34)))
    assert image_size(f"memory://{tmp_path.name}/x.png") == (12, 34)


class _RefusingFS(MemoryFileSystem):
    """An fsspec store whose every call fails as s3fs does when its endpoint refuses the
    connection: ``isfile`` swallows the error (pyarrow then reports FileNotFoundError)."""

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        raise ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
def refusing_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(_RefusingFS()))
    monkeypatch.setattr(image_size_module, "resolve",
                        lambda location, storage=None: (fs, location.split("://")[-1]))
    yield


def test_refused_fsspec_store_is_an_outage_not_a_missing_image(
        tmp_path: Path, refusing_store: None) -> None:
    with pytest.raises(StorageUnavailable, match="Connection refused") as info:
        image_size(f"s3://{tmp_path.name}/x.png", StorageConfig(client="s3fs"))
    assert is_infrastructure_fault(info.value)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("read timed out"),
    OSError("When reading information for key 'x.png' in bucket 'b': AWS Error "
            "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect "
            "to server"),
    OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate"),
    PermissionError("AWS Error ACCESS_DENIED during GetObject operation"),
])
def test_store_errors_are_outages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  exc: BaseException) -> None:
    class Failing:
        def open_input_file(self, path: str) -> Any:
            raise exc

    monkeypatch.setattr(image_size_module, "resolve",
                        lambda location, storage=None: (Failing(), location))
    with pytest.raises(StorageUnavailable):
        image_size(str(tmp_path / f"{type(exc).__name__}-{id(exc)}.png"))


def test_sizes_are_cached_per_location_and_storage(tmp_path: Path) -> None:
    path = save(tmp_path / "c.png", png_bytes((3, 4)))
    assert image_size(str(path)) == (3, 4)
    path.unlink()  # a hit reads nothing; another storage is another key
    assert image_size(str(path)) == (3, 4)
    with pytest.raises(RecordError):
        image_size(str(path), StorageConfig(region="eu-west-1"))


# ------------------------------------------------------------------ SourceReader.read


def test_dota_store_outage_fails_the_read_and_bad_records_stay_rejects(tmp_path: Path
                                                                       ) -> None:
    """The same label files: with the images on a store that refuses connections the read
    raises (nothing to commit); with the images there, the bad labels are rejects."""
    labels = write_dota(tmp_path)
    down = StorageConfig(endpoint_url=f"http://127.0.0.1:{closed_port()}", anonymous=True)
    reader = SourceReader("dota", "dota", "s3://bucket/train/images", down)
    with pytest.raises(StorageUnavailable, match="(?i)connect") as info:
        reader.read(str(labels), 0, 10**9)
    assert is_infrastructure_fault(info.value)
    b = read("dota", labels, image_root=tmp_path / "train" / "images")
    assert rejects(b) == {"dota:P0001": "empty_text", "dota:P0002": "bad_field",
                          "dota:P0003": "bad_field", "dota:P0004": "image_missing"}
    assert sorted(set(rows(b)) - set(rejects(b))) == ["dota:P0000", "dota:P0005"]


def test_pointqa_store_outage_fails_the_read(tmp_path: Path, refusing_store: None) -> None:
    vg = tmp_path / "vg"
    path = write_pointqa(tmp_path / "pointingqa", image_root=vg)
    reader = SourceReader("pointqa", "pointqa", f"s3://{tmp_path.name}/vg",
                          StorageConfig(client="s3fs"))
    with pytest.raises(StorageUnavailable):
        reader.read(str(path), 0, 10**9)


def test_pointqa_records_carry_no_storage_settings(tmp_path: Path) -> None:
    vg = tmp_path / "vg"
    path = write_pointqa(tmp_path / "pointingqa", image_root=vg)
    records = SourceReader("pointqa", "pointqa", str(vg), StorageConfig()).records(str(path))
    assert records and all("storage" not in r for _, r in records)
    b = read("pointqa", path, image_root=vg)
    assert all("storage" not in json.loads(m).get("record", {}) for m in b["meta"])


@pytest.fixture
def flaky_adapter() -> Iterator[str]:
    """An adapter whose converter fails per record: ``raise`` names the exception."""
    errors: dict[str, BaseException] = {
        "key": KeyError("answer"),
        "type": TypeError("'NoneType' object is not subscriptable"),
        "refused": ConnectionRefusedError(111, "Connection refused"),
        "pyarrow": OSError("AWS Error NETWORK_CONNECTION during GetObject operation: "
                           "curlCode: 7, Could not connect to server"),
        "oom": MemoryError(),
    }

    def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
        if record.get("raise"):
            raise errors[record["raise"]]
        return sample(ctx, task="vqa", image=None, meta={},
                      turns=[{"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}])

    registry.register(Adapter("test_flaky", convert, "raises what its records name"))
    yield "test_flaky"
    registry.unregister("test_flaky")


def test_converter_exceptions_are_rejects_but_outages_raise(tmp_path: Path,
                                                            flaky_adapter: str) -> None:
    def reader_of(*records: dict[str, Any]) -> tuple[SourceReader, str]:
        file = save(tmp_path / f"{len(list(tmp_path.iterdir()))}.json", list(records))
        return SourceReader(flaky_adapter, "flaky", None, StorageConfig()), str(file)

    reader, file = reader_of({"id": "ok"}, {"id": "k", "raise": "key"},
                             {"id": "t", "raise": "type"})
    b = reader.read(file, 0, 10)
    check(b)
    assert rejects(b) == {"flaky:k": "bad_record", "flaky:t": "bad_record"}
    assert b["_reject_detail"][1] == "KeyError: 'answer'"
    for kind in ("refused", "pyarrow", "oom"):
        reader, file = reader_of({"id": "ok"}, {"id": "k", "raise": "key"},
                                 {"id": "x", "raise": kind})
        with pytest.raises((ConnectionRefusedError, OSError, MemoryError)):
            reader.read(file, 0, 10)
