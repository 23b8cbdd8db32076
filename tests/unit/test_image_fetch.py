"""The pipeline's http(s) image fetch and store reads against real servers: a host that is
down, throttling, refusing the key or hanging is an infrastructure fault
(:class:`ImageStoreUnavailable`), a missing image or a redirect is a row reject, a body over
``max_bytes`` is ``image_too_large``, and the environment's proxies are not used."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pf_ray.data.images import ImageError, ImageLoader, ImageStoreUnavailable
from pf_ray.faults import StorageUnavailable, is_infrastructure_fault, storage_fault

PNG = io.BytesIO()
Image.new("RGB", (8, 6), (10, 200, 30)).save(PNG, format="PNG")
PNG_BYTES = PNG.getvalue()
HITS: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    """``/ok.png``; ``/status/N``; ``/redirect`` (to /ok.png); ``/big`` (no length);
    ``/hang`` (answers nothing for 5 s); ``/cut`` (the host dies half-way through a reply)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        HITS.append(self.path)
        if self.path == "/ok.png":
            self._send(200, PNG_BYTES)
        elif self.path.startswith("/status/"):
            self._send(int(self.path.rsplit("/", 1)[1]), b"no")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 4096)
            except ConnectionError:  # the loader hung up at its cap, as it should
                pass
        elif self.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif self.path == "/hang":
            time.sleep(5)
        elif self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG_BYTES)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PNG_BYTES[:10])
            self.close_connection = True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def loader(**kw: Any) -> ImageLoader:
    return ImageLoader(allowed_hosts=("127.0.0.1",), **kw)


def test_allowed_image_is_fetched(host: str) -> None:
    assert loader().load(f"{host}/ok.png").size == (8, 6)


@pytest.mark.parametrize(("status", "reason"), [(404, "image_missing"), (410, "image_missing"),
                                                (400, "image_refused"),
                                                (451, "image_refused")])
def test_row_statuses_are_rejects(host: str, status: int, reason: str) -> None:
    with pytest.raises(ImageError) as info:
        loader().load(f"{host}/status/{status}")
    assert info.value.reason == reason and f"HTTP {status}" in info.value.detail


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 401, 402, 403, 407, 408])
def test_host_statuses_are_infrastructure(host: str, status: int) -> None:
    with pytest.raises(ImageStoreUnavailable) as info:
        loader().load(f"{host}/status/{status}")
    assert f"HTTP {status}" in str(info.value) and is_infrastructure_fault(info.value)
    assert not isinstance(info.value, ImageError)


def test_redirect_is_a_reject_and_not_followed(host: str) -> None:
    HITS.clear()
    with pytest.raises(ImageError) as info:
        loader().load(f"{host}/redirect")
    assert info.value.reason == "image_redirect" and "/ok.png" in info.value.detail
    assert HITS == ["/redirect"]  # the target was never requested


@pytest.mark.parametrize("path", ["/big", "/big-declared"])
def test_byte_cap(host: str, path: str) -> None:
    with pytest.raises(ImageError) as info:
        loader(max_bytes=100_000).load(f"{host}{path}")
    assert info.value.reason == "image_too_large" and "max_bytes 100000" in info.value.detail


def test_hanging_host_times_out_as_infrastructure(host: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(ImageStoreUnavailable, match="(?i)timeout|timed out"):
        loader(timeout_s=0.5).load(f"{host}/hang")
    assert time.monotonic() - t0 < 3


def test_reply_cut_short_is_infrastructure(host: str) -> None:
    with pytest.raises(ImageStoreUnavailable, match="IncompleteRead"):
        loader().load(f"{host}/cut")


@pytest.mark.parametrize("ref", ["http://127.0.0.1/a b.png", "http://[::1/x.png"])
def test_malformed_url_is_the_rows_reject(ref: str) -> None:
    with pytest.raises(ImageError) as info:
        loader().load(ref)
    assert info.value.reason == "image_bad_url"


def test_refused_connection_is_infrastructure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens there
    with pytest.raises(ImageStoreUnavailable, match="(?i)refused"):
        loader(timeout_s=2).load(f"http://127.0.0.1:{port}/x.png")


def test_environment_proxies_are_not_used(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert loader().load(f"{host}/ok.png").size == (8, 6)  # a proxy would have refused


# ------------------------------------------------------------------ store errors


@pytest.mark.parametrize("exc", [
    # what pyarrow's S3 client raised against the SeaweedFS test server (measured)
    OSError("When reading information for key 'x.png' in bucket 'bkt': AWS Error "
            "ACCESS_DENIED during HeadObject operation: No response body."),
    OSError("When reading information for key 'x.png' in bucket 'bkt': AWS Error "
            "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not "
            "connect to server"),
    OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your rate"),
    OSError("AWS Error INVALID_ACCESS_KEY_ID during GetObject operation"),
    OSError("AWS Error SIGNATURE_DOES_NOT_MATCH during GetObject operation"),
    OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation"),
    PermissionError("Forbidden"),  # s3fs with a refused key (measured)
    ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
    OSError("an error nobody classified"),  # unknown: failing the unit is recoverable
])
def test_store_outages_are_infrastructure(exc: BaseException) -> None:
    assert storage_fault(exc) == "infrastructure"


def test_botocore_faults_by_name_and_code() -> None:
    class EndpointConnectionError(Exception):  # botocore's names, matched without botocore
        pass

    class ClientError(Exception):
        def __init__(self, code: str):
            super().__init__(f"An error occurred ({code})")
            self.response = {"Error": {"Code": code}}

    assert storage_fault(EndpointConnectionError("Could not connect")) == "infrastructure"
    assert is_infrastructure_fault(EndpointConnectionError("Could not connect"))
    assert storage_fault(ClientError("NoSuchKey")) == "row"
    for code in ("AccessDenied", "SlowDown", "ExpiredToken", "InvalidAccessKeyId"):
        assert storage_fault(ClientError(code)) == "infrastructure", code


@pytest.mark.parametrize("exc", [
    FileNotFoundError(2, "Path does not exist 'bkt/none.png'"), IsADirectoryError("x"),
    NotADirectoryError("x"), OSError("NoSuchKey: The specified key does not exist."),
])
def test_missing_objects_are_row_faults(exc: BaseException) -> None:
    assert storage_fault(exc) == "row"


def test_local_folder_is_missing_not_infrastructure(tmp_path: Path) -> None:
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageError) as info:
        ImageLoader(image_root=str(tmp_path)).load("d.png")
    assert info.value.reason == "image_missing"
    assert issubclass(ImageStoreUnavailable, StorageUnavailable)
