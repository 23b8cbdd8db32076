"""The size of an image from the first bytes of its file, for converters whose release
gives pixel coordinates but no image size (DOTA's label files, a DIOR / HRRSD annotation
without ``<size>``, PointQA's points).

:func:`image_size` reads growing prefixes of the file (a range read on an object store)
until the header gives the size: PNG's ``IHDR`` chunk directly, any other format through
PIL's lazy ``Image.open``, which parses the header and never decodes the pixels.

What it raises says whose fault it is (docs/jobs.md, "Row faults and infrastructure faults"):

* :class:`RecordError` for the row's image: ``image_missing`` (no such file or object),
  ``image_empty``, ``image_not_image`` (no format PIL knows), ``image_corrupt`` (a known
  format whose header is cut or gives no size), ``image_too_large`` (over PIL's
  decompression-bomb limit, which the image loader would refuse anyway);
* :class:`~pf_ray.faults.StorageUnavailable` when the store cannot serve the read (a
  refused connection, a timeout, throttling, a 5xx, refused credentials; see
  :func:`pf_ray.faults.storage_fault`): an outage fails the unit, never a reject.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

from pf_ray.data.sources.errors import RecordError
from pf_ray.faults import StorageUnavailable, storage_fault
from pf_ray.specs import StorageConfig
from pf_ray.storage import confirm_missing, resolve

# Growing prefixes read for the size: PNG's IHDR is in the first 33 bytes and a JPEG's SOF
# marker follows its EXIF / ICC segments (tens of KiB in practice); when it lies further
# (a big ICC profile or EXIF thumbnail), the same open file is read on to the next prefix.
PREFIXES = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(location: str, storage: StorageConfig | None = None) -> tuple[int, int]:
    """``(width, height)`` of the image at ``location`` (a local path or a URI, resolved
    with :func:`pf_ray.storage.resolve` and ``storage``), from a prefix of its bytes.

    Raises :class:`RecordError` for a missing or unreadable image and
    :class:`~pf_ray.faults.StorageUnavailable` for an outage of the store.
    """
    return _cached_size(location, storage.model_dump_json() if storage is not None else "")


# Per process, the sizes found (exceptions are not cached: a missing image or an outage is
# asked again). Justified by PointQA, whose LocalQA release is flattened into one record
# per point and holds several questions per image: without it each point would read the
# same header again, one object-store round trip each. The detection releases read each
# image once; a hit there costs nothing.
@lru_cache(maxsize=4096)
def _cached_size(location: str, storage_json: str) -> tuple[int, int]:
    storage = StorageConfig.model_validate_json(storage_json) if storage_json else None
    fs, path = resolve(location, storage)
    head = b""
    try:
        f = fs.open_input_file(path)
    except Exception as exc:  # noqa: BLE001 - classified: a missing object or an outage
        raise _read_error(fs, path, location, exc) from exc
    with f:
        for n in PREFIXES:
            try:
                head += _read(f, n - len(head))
            except Exception as exc:  # noqa: BLE001 - classified, as above
                raise _read_error(fs, path, location, exc) from exc
            size = header_size(head, whole=len(head) < n, where=location)
            if size is not None:
                return size
    raise RecordError("image_corrupt", f"{location}: no image size in its first "
                      f"{len(head)} bytes")


def _read_error(fs: pafs.FileSystem, path: str, location: str, exc: Exception
                ) -> RecordError | StorageUnavailable:
    """A failed open or read: ``image_missing`` when the file is not there, else the
    store's outage (a "not found" of an fsspec filesystem is confirmed first: s3fs
    reports a refused connection as one)."""
    real = confirm_missing(fs, path, exc)
    if storage_fault(real) == "row":
        return RecordError("image_missing", f"{location}: {real}")
    return StorageUnavailable(f"{location}: {type(real).__name__}: {real}")


def _read(f: pa.NativeFile, n: int) -> bytes:
    """Up to ``n`` more bytes of ``f`` (fewer only at the end of the file)."""
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def header_size(head: bytes, *, whole: bool, where: str = "<bytes>"
                ) -> tuple[int, int] | None:
    """``(width, height)`` from the first bytes of an image file (``whole``: all of it).
    None when the prefix gives no size but the file goes on (read more); raises
    :class:`RecordError` when the whole file gives none, or for a header that is there and
    wrong (a zero size, over PIL's decompression-bomb limit)."""
    if not head:
        raise RecordError("image_empty", f"{where}: zero bytes")
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])  # PNG: the IHDR chunk comes first
        if w == 0 or h == 0:
            raise RecordError("image_corrupt", f"{where}: PNG header gives {w}x{h}")
        return w, h
    try:
        with Image.open(io.BytesIO(head)) as img:  # lazy: parses the header only
            w, h = img.size
    except Image.DecompressionBombError as exc:
        raise RecordError("image_too_large", f"{where}: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            struct.error) as exc:
        # PIL reports a header cut short (a JPEG whose SOF lies past the prefix) as
        # "cannot identify": while the file goes on, read more before judging it
        if not whole:
            return None
        if isinstance(exc, UnidentifiedImageError):
            raise RecordError("image_not_image", f"{where}: not an image format PIL "
                              "knows") from exc
        raise RecordError("image_corrupt", f"{where}: {type(exc).__name__}: {exc}") from exc
    if w <= 0 or h <= 0:
        raise RecordError("image_corrupt", f"{where}: header gives {w}x{h}")
    return w, h
