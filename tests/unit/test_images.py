"""Unit tests of :mod:`pf_ray.data.images`: real image files in every PIL mode, every
failure reason, tar shard members, synthetic references and embedded bytes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pf_ray.data import images
from pf_ray.data.images import REASONS, ImageError, ImageLoader, to_rgb
from pf_ray.data.synthetic import make_scene, render

# ------------------------------------------------------------------ helpers


def save(img: Image.Image, path: Path, fmt: str, **params: object) -> Path:
    """Write ``img`` to ``path`` in ``fmt`` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **params)
    return path


def image_bytes(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode ``img`` in ``fmt`` and return the bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def load_file(path: Path, **loader_args: object) -> Image.Image:
    """Load a file by its absolute path through a fresh loader."""
    return ImageLoader(**loader_args).load(str(path))  # type: ignore[arg-type]


def reason_of(loader: ImageLoader, ref: str | None, data: bytes | None = None) -> str:
    """The ImageError reason that loading ``ref``/``data`` raises."""
    with pytest.raises(ImageError) as info:
        loader.load(ref, data)
    assert info.value.reason in REASONS
    return info.value.reason


def assert_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Check the image is RGB of ``size``; return its pixels as an (h, w, 3) array."""
    assert img.mode == "RGB"
    assert img.size == size
    arr = np.asarray(img)
    assert arr.shape == (size[1], size[0], 3)
    assert arr.dtype == np.uint8
    return arr


def real_jpeg(size: int = 64) -> bytes:
    """A JPEG with real (non-uniform) content, large enough to truncate meaningfully."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return image_bytes(Image.fromarray(arr, "RGB"), "JPEG", quality=90)


# ------------------------------------------------------------------ modes -> RGB


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("TIFF", "tif")])
def test_cmyk_converts_to_rgb(tmp_path: Path, fmt: str, ext: str) -> None:
    img = Image.new("CMYK", (8, 6), (0, 0, 0, 0))  # no ink: white
    img.paste((255, 0, 0, 0), (0, 0, 4, 6))  # pure cyan on the left half
    path = save(img, tmp_path / f"cmyk.{ext}", fmt)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    arr = assert_rgb(load_file(path), (8, 6)).astype(int)
    assert np.abs(arr[3, 7] - (255, 255, 255)).max() <= 8
    assert np.abs(arr[3, 0] - (0, 255, 255)).max() <= 8


def test_l_converts_to_rgb(tmp_path: Path) -> None:
    img = Image.new("L", (5, 4), 77)
    img.putpixel((0, 0), 200)
    arr = assert_rgb(load_file(save(img, tmp_path / "l.png", "PNG")), (5, 4))
    assert tuple(arr[0, 0]) == (200, 200, 200)
    assert tuple(arr[3, 4]) == (77, 77, 77)


def palette_image() -> Image.Image:
    """A 4x4 palette image: index 0 red, 1 green, 2 blue; the top-left pixel is index 2."""
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 253)
    img.putpixel((0, 0), 2)
    img.putpixel((1, 0), 1)
    return img


def test_p_without_transparency_converts_to_rgb(tmp_path: Path) -> None:
    path = save(palette_image(), tmp_path / "p.png", "PNG")
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" not in raw.info
    arr = assert_rgb(load_file(path), (4, 4))
    assert tuple(arr[0, 0]) == (0, 0, 255)
    assert tuple(arr[0, 1]) == (0, 255, 0)
    assert tuple(arr[3, 3]) == (255, 0, 0)


def test_p_with_transparency_composites_on_white(tmp_path: Path) -> None:
    path = save(palette_image(), tmp_path / "pt.png", "PNG", transparency=2)
    with Image.open(path) as raw:
        assert raw.mode == "P" and raw.info.get("transparency") is not None
    arr = assert_rgb(load_file(path), (4, 4))
    assert tuple(arr[0, 0]) == (255, 255, 255)  # the transparent index
    assert tuple(arr[0, 1]) == (0, 255, 0)
    assert tuple(arr[3, 3]) == (255, 0, 0)


def test_rgba_alpha_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (3, 2), (10, 20, 30, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black
    arr = assert_rgb(load_file(save(img, tmp_path / "rgba.png", "PNG")), (3, 2)).astype(int)
    assert tuple(arr[0, 0]) == (255, 255, 255)
    assert np.abs(arr[0, 1] - 127).max() <= 1
    assert tuple(arr[1, 2]) == (10, 20, 30)


def test_la_alpha_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("LA", (3, 2), (40, 255))
    img.putpixel((2, 1), (0, 0))
    path = save(img, tmp_path / "la.png", "PNG")
    with Image.open(path) as raw:
        assert raw.mode == "LA"
    arr = assert_rgb(load_file(path), (3, 2))
    assert tuple(arr[1, 2]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (40, 40, 40)


def test_i16_png_rescaled_to_8_bit(tmp_path: Path) -> None:
    data = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(data), tmp_path / "i16.png", "PNG")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I;16")
    arr = assert_rgb(load_file(path), (2, 2))
    assert tuple(arr[0, 1]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert abs(int(arr[1, 0, 0]) - 128) <= 1


def test_i16_uniform_white_stays_white(tmp_path: Path) -> None:
    """16-bit scaling is absolute (0..65535), so a flat white image is not stretched."""
    data = np.full((3, 3), 65535, dtype=np.uint16)
    arr = assert_rgb(load_file(save(Image.fromarray(data), tmp_path / "w.png", "PNG")), (3, 3))
    assert (arr == 255).all()


def test_i_32_bit_converts_to_rgb(tmp_path: Path) -> None:
    data = np.array([[0, 50_000], [100_000, 200_000]], dtype=np.int32)
    path = save(Image.fromarray(data), tmp_path / "i.tif", "TIFF")
    with Image.open(path) as raw:
        assert raw.mode == "I"
    arr = assert_rgb(load_file(path), (2, 2))
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert int(arr[1, 0, 0]) in (127, 128)


def test_f_float_converts_to_rgb(tmp_path: Path) -> None:
    data = np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    path = save(Image.fromarray(data), tmp_path / "f.tif", "TIFF")
    with Image.open(path) as raw:
        assert raw.mode == "F"
    arr = assert_rgb(load_file(path), (2, 2))
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert int(arr[0, 1, 0]) in (63, 64)


def test_mode_1_converts_to_rgb(tmp_path: Path) -> None:
    img = Image.new("1", (4, 4), 0)
    img.putpixel((1, 2), 1)
    path = save(img, tmp_path / "one.png", "PNG")
    with Image.open(path) as raw:
        assert raw.mode == "1"
    arr = assert_rgb(load_file(path), (4, 4))
    assert tuple(arr[2, 1]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (0, 0, 0)


def test_rgb_is_returned_unchanged(tmp_path: Path) -> None:
    img = Image.new("RGB", (3, 3), (1, 2, 3))
    arr = assert_rgb(load_file(save(img, tmp_path / "rgb.png", "PNG")), (3, 3))
    assert (arr == (1, 2, 3)).all()


@pytest.mark.parametrize("mode", ["L", "P", "PA", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1",
                                  "YCbCr", "HSV", "LAB"])
def test_to_rgb_every_mode_in_memory(mode: str) -> None:
    """Whatever the mode, ``to_rgb`` gives RGB with the same size."""
    img = Image.new(mode, (5, 3))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 3)


# ------------------------------------------------------------------ failure reasons


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    data = real_jpeg()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(ImageLoader(), str(path)) == "image_corrupt"
    assert reason_of(ImageLoader(), None, data[: len(data) // 2]) == "image_corrupt"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert reason_of(ImageLoader(), str(path)) == "image_empty"
    assert reason_of(ImageLoader(), "x.jpg", b"") == "image_empty"


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is a caption, not a picture\n")
    assert reason_of(ImageLoader(), str(path)) == "image_not_image"


def test_over_max_pixels_is_too_large(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (20, 20), (9, 9, 9)), tmp_path / "big.png", "PNG")
    assert reason_of(ImageLoader(max_pixels=100), str(path)) == "image_too_large"
    # exactly at the cap is fine
    assert ImageLoader(max_pixels=400).load(str(path)).size == (20, 20)


def test_missing_file(tmp_path: Path) -> None:
    assert reason_of(ImageLoader(), str(tmp_path / "nope.jpg")) == "image_missing"
    loader = ImageLoader(image_root=str(tmp_path))
    assert reason_of(loader, "sub/nope.jpg") == "image_missing"


def test_relative_path_without_root_is_missing() -> None:
    assert reason_of(ImageLoader(), "train2014/x.jpg") == "image_missing"


def test_folder_is_missing(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    assert reason_of(ImageLoader(image_root=str(tmp_path)), "dir.jpg") == "image_missing"


@pytest.mark.parametrize("ref", ["../x.png", "a/../../x.png", "..", "a/b/../../../x.png",
                                 "tar://a.png::../shard.tar"])
def test_path_escape(tmp_path: Path, ref: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    save(Image.new("RGB", (2, 2)), tmp_path / "x.png", "PNG")  # exists just outside the root
    assert reason_of(ImageLoader(image_root=str(root)), ref) == "image_path_escape"


def test_relative_path_that_stays_inside_root_loads(tmp_path: Path) -> None:
    save(Image.new("RGB", (2, 2), (5, 6, 7)), tmp_path / "x.png", "PNG")
    img = ImageLoader(image_root=str(tmp_path)).load("a/../x.png")
    assert tuple(np.asarray(img)[0, 0]) == (5, 6, 7)


def test_http_url_not_allowed_does_not_touch_network(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoNetwork:
        def open(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a URL was opened for a host that is not allowed")

    monkeypatch.setattr(images, "_OPENER", NoNetwork())
    assert reason_of(ImageLoader(), "http://example.com/a.jpg") == "image_url_not_allowed"
    loader = ImageLoader(allowed_hosts=("images.example.org",))
    assert reason_of(loader, "https://example.com/a.jpg") == "image_url_not_allowed"


def test_reasons_are_all_produced_somewhere() -> None:
    """Every reason is raised by the module (no stale reason such as a store outage)."""
    source = Path(images.__file__).read_text()
    assert "image_fetch_failed" not in REASONS
    for reason in REASONS:
        assert source.count(f'"{reason}"') >= 2, reason  # listed, and raised


def test_byte_cap_on_files_and_embedded_bytes(tmp_path: Path) -> None:
    data = image_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "BMP")
    path = tmp_path / "x.bmp"
    path.write_bytes(data)
    assert reason_of(ImageLoader(max_bytes=len(data) - 1), str(path)) == "image_too_large"
    assert reason_of(ImageLoader(max_bytes=len(data) - 1), None, data) == "image_too_large"
    assert ImageLoader(max_bytes=len(data)).load(str(path)).size == (64, 64)


@pytest.mark.parametrize("ref", [None, ""])
def test_no_reference(ref: str | None) -> None:
    assert reason_of(ImageLoader(), ref) == "image_no_reference"


def test_bad_synthetic_reference_is_missing() -> None:
    assert reason_of(ImageLoader(), "synthetic://x/y") == "image_missing"


# ------------------------------------------------------------------ tar shards


def build_shard(path: Path, members: dict[str, bytes]) -> Path:
    """Write a tar archive with the given member names and contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """``tmp_path/shard.tar`` holding ``imgs/a.png`` (8x8, colour (12, 34, 56))."""
    png = image_bytes(Image.new("RGB", (8, 8), (12, 34, 56)), "PNG")
    return build_shard(tmp_path / "shard.tar", {"imgs/a.png": png, "imgs/b.txt": b"text"})


def test_tar_member_relative_to_root(shard: Path) -> None:
    img = ImageLoader(image_root=str(shard.parent)).load("tar://imgs/a.png::shard.tar")
    arr = assert_rgb(img, (8, 8))
    assert (arr == (12, 34, 56)).all()


def test_tar_member_by_absolute_path(shard: Path) -> None:
    img = ImageLoader().load(f"tar://imgs/a.png::{shard}")
    assert (assert_rgb(img, (8, 8)) == (12, 34, 56)).all()


def test_tar_missing_member(shard: Path) -> None:
    loader = ImageLoader(image_root=str(shard.parent))
    assert reason_of(loader, "tar://imgs/zzz.png::shard.tar") == "image_missing"


def test_tar_missing_archive(tmp_path: Path) -> None:
    loader = ImageLoader(image_root=str(tmp_path))
    assert reason_of(loader, "tar://imgs/a.png::absent.tar") == "image_missing"


@pytest.mark.parametrize("ref", ["tar://imgs/a.png", "tar://::shard.tar", "tar://imgs/a.png::"])
def test_tar_malformed_reference(shard: Path, ref: str) -> None:
    assert reason_of(ImageLoader(image_root=str(shard.parent)), ref) == "image_missing"


def test_tar_member_that_is_not_an_image(shard: Path) -> None:
    loader = ImageLoader(image_root=str(shard.parent))
    assert reason_of(loader, "tar://imgs/b.txt::shard.tar") == "image_not_image"


def test_archive_that_is_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"definitely not a tar archive" * 40)
    loader = ImageLoader(image_root=str(tmp_path))
    assert reason_of(loader, "tar://a.png::bad.tar") == "image_corrupt"


# ------------------------------------------------------------------ synthetic and bytes


def test_synthetic_matches_render() -> None:
    img = ImageLoader().load("synthetic://0/3?size=32")
    arr = assert_rgb(img, (32, 32))
    expected = np.asarray(render(make_scene(0, 3), 32).convert("RGB"))
    assert np.array_equal(arr, expected)


def test_embedded_bytes_take_precedence(tmp_path: Path) -> None:
    on_disk = save(Image.new("RGB", (4, 4), (255, 0, 0)), tmp_path / "red.png", "PNG")
    embedded = image_bytes(Image.new("RGB", (6, 6), (0, 0, 255)), "PNG")
    loader = ImageLoader(image_root=str(tmp_path))
    for ref in ("red.png", str(on_disk), "missing.png", "../escape.png", None):
        arr = assert_rgb(loader.load(ref, embedded), (6, 6))
        assert (arr == (0, 0, 255)).all()


# ------------------------------------------------------------------ reasons


def test_every_failure_reason_is_declared(tmp_path: Path) -> None:
    """Each failure case gives a distinct, declared reason."""
    jpeg = real_jpeg()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    save(Image.new("RGB", (20, 20)), tmp_path / "big.png", "PNG")
    loader = ImageLoader(image_root=str(tmp_path))
    cases = {
        "cut.jpg": "image_corrupt",
        "empty.jpg": "image_empty",
        "text.jpg": "image_not_image",
        "gone.png": "image_missing",
        "../x.png": "image_path_escape",
        "http://example.com/a.jpg": "image_url_not_allowed",
        "": "image_no_reference",
    }
    seen = {ref: reason_of(loader, ref) for ref in cases}
    small = ImageLoader(image_root=str(tmp_path), max_pixels=100)  # only big.png is over it
    seen["big.png"] = reason_of(small, "big.png")
    cases["big.png"] = "image_too_large"
    assert seen == cases
    assert len(set(seen.values())) == len(seen)
    assert set(seen.values()) <= set(REASONS)
    assert len(set(REASONS)) == len(REASONS)


def test_image_error_rejects_unknown_reason() -> None:
    with pytest.raises(AssertionError):
        ImageError("not_a_reason", "x")
    err = ImageError("image_missing", "detail here")
    assert err.reason == "image_missing" and err.detail == "detail here"
    assert str(err) == "image_missing: detail here"


@pytest.mark.parametrize("mode,colour", [("L", 0), ("RGB", (0, 0, 0))])
def test_colour_key_transparency_composited_on_white(tmp_path: Path, mode: str,
                                                     colour: int | tuple[int, ...]) -> None:
    img = Image.new(mode, (2, 2), colour)
    path = save(img, tmp_path / f"key_{mode}.png", "PNG", transparency=colour)
    arr = assert_rgb(load_file(path), (2, 2))
    assert tuple(arr[0, 0]) == (255, 255, 255)
