"""Image inputs of a request: ``data:`` URIs, and http(s) URLs of allow-listed hosts only.

The server never opens a path a request names: a URL is classified by its scheme *before*
anything is read. ``data:`` is decoded in memory; ``http``/``https`` are fetched only when
the host (or ``host:port``) is in the spec's allow-list (empty by default), without
following redirects (a redirect could lead off the list), without proxies from the
environment, within a time limit and a byte limit; ``file:`` and every other scheme are
refused. Decoding opens only common raster formats and checks width * height against the
pixel cap before the pixels are decoded (a small PNG can claim a huge canvas).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image

from pf_ray.serve.api import APIError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
INLINE_DECODE_BYTES = 256_000  # smaller images decode on the event loop
_DATA = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)"
                   r"(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Checked:
    """One image of a request after the checks: its bytes as received, their format
    (``PNG``, ``JPEG``...) and the decoded RGB image."""

    data: bytes
    format: str
    image: Image.Image


@dataclass(frozen=True)
class ImageRef:
    """Where one image of a request comes from (``param`` names its field)."""

    url: str
    param: str


def host_allowed(url: str, allowed_hosts: list[str]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        return False
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host in allowed_hosts or hostport in allowed_hosts


def classify(ref: ImageRef, allowed_hosts: list[str]) -> str:
    """``"data"`` or ``"http"``; any other scheme, or a host not allowed, is a 400."""
    scheme = ref.url.split(":", 1)[0].lower() if ":" in ref.url else ""
    if scheme == "data":
        return "data"
    if scheme in ("http", "https"):
        if not host_allowed(ref.url, allowed_hosts):
            host = urlsplit(ref.url).netloc.rsplit("@", 1)[-1]
            raise APIError(400, f"{ref.param}: images are not fetched from {host!r}; allowed "
                           "hosts: " + (", ".join(allowed_hosts) or "none (send the image as a "
                                        "data: URI)"), param=ref.param, code="image_host_not_allowed")
        return "http"
    raise APIError(400, f"{ref.param}: unsupported image URL scheme {scheme or ref.url[:20]!r}; "
                   "allowed: data: URIs (base64), and http(s) URLs of allow-listed hosts",
                   param=ref.param, code="unsupported_image_url")


def decode_data_uri(ref: ImageRef, max_bytes: int) -> bytes:
    m = _DATA.match(ref.url)
    if m is None or not m.group("b64"):
        raise APIError(400, f"{ref.param}: a data: URI must be 'data:image/<type>;base64,<data>'",
                       param=ref.param, code="invalid_image_url")
    mime = (m.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{ref.param}: media type {mime!r} is not an image", param=ref.param,
                       code="invalid_image_url")
    payload = m.group("data")
    if len(payload) * 3 // 4 > max_bytes + 3:  # before decoding anything
        raise APIError(413, f"{ref.param}: the image is about {len(payload) * 3 // 4} bytes; "
                       f"allowed: at most {max_bytes}", param=ref.param, code="image_too_large")
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{ref.param}: the data: URI is not valid base64", param=ref.param,
                       code="invalid_image_url") from None
    if len(data) > max_bytes:
        raise APIError(413, f"{ref.param}: the image is {len(data)} bytes; allowed: at most "
                       f"{max_bytes}", param=ref.param, code="image_too_large")
    return data


async def fetch(ref: ImageRef, max_bytes: int, timeout_s: float) -> bytes:
    """GET an (allow-listed) URL: no redirects, no env proxies, ``timeout_s`` for it all."""
    import aiohttp  # Ray Serve's own HTTP client library

    async def get() -> bytes:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session, \
                session.get(ref.url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise APIError(400, f"{ref.param}: fetching the image gave HTTP "
                               f"{resp.status} (redirects are not followed)",
                               param=ref.param, code="image_fetch_failed")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise APIError(413, f"{ref.param}: the image is {resp.content_length} bytes; "
                               f"allowed: at most {max_bytes}", param=ref.param,
                               code="image_too_large")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise APIError(413, f"{ref.param}: the image is over {max_bytes} bytes",
                                   param=ref.param, code="image_too_large")
            return bytes(data)

    try:
        return await asyncio.wait_for(get(), timeout_s)
    except APIError:
        raise
    except (TimeoutError, asyncio.TimeoutError):
        raise APIError(400, f"{ref.param}: fetching the image took over {timeout_s} s",
                       param=ref.param, code="image_fetch_failed") from None
    except Exception as exc:  # connection refused, TLS, protocol errors
        raise APIError(400, f"{ref.param}: fetching the image failed ({type(exc).__name__})",
                       param=ref.param, code="image_fetch_failed") from None


def open_image(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """Decode to RGB; the size is checked from the header before the pixels are read."""
    return _decode(data, param, max_pixels)[0]


def _decode(data: bytes, param: str, max_pixels: int) -> tuple[Image.Image, str]:
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise APIError(413, f"{param}: the image is {w}x{h} = {w * h} pixels; allowed: "
                               f"at most {max_pixels}", param=param, code="image_too_large")
            img.load()
            return img.convert("RGB"), str(img.format)
    except APIError:
        raise
    except Image.DecompressionBombError:
        raise APIError(413, f"{param}: the image is too large to decode", param=param,
                       code="image_too_large") from None
    except Exception as exc:
        raise APIError(400, f"{param}: not a decodable image (allowed formats: "
                       f"{', '.join(FORMATS)}; {type(exc).__name__})", param=param,
                       code="invalid_image") from None


async def load(ref: ImageRef, *, allowed_hosts: list[str], max_bytes: int, max_pixels: int,
               timeout_s: float) -> Image.Image:
    """One image of a request, checked, fetched or decoded, as an RGB PIL image."""
    return (await load_checked(ref, allowed_hosts=allowed_hosts, max_bytes=max_bytes,
                               max_pixels=max_pixels, timeout_s=timeout_s)).image


async def load_checked(ref: ImageRef, *, allowed_hosts: list[str], max_bytes: int,
                       max_pixels: int, timeout_s: float) -> Checked:
    """One image of a request, checked, fetched or decoded: its bytes, format and pixels."""
    if classify(ref, allowed_hosts) == "data":
        data = decode_data_uri(ref, max_bytes)
    else:
        data = await fetch(ref, max_bytes, timeout_s)
    if len(data) < INLINE_DECODE_BYTES:  # a thread hop costs more than decoding a small one
        image, fmt = _decode(data, ref.param, max_pixels)
    else:
        image, fmt = await asyncio.to_thread(_decode, data, ref.param, max_pixels)
    return Checked(data, fmt, image)
