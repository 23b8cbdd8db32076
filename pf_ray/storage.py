"""URIs, filesystems and local copies: the ground floor that ``data/`` and ``model/`` share.

A path is a local folder or file, or a URI: ``s3://`` (pyarrow's S3 client or s3fs, with
the endpoint and credentials of a :class:`~pf_ray.specs.StorageConfig`, honouring
``AWS_ENDPOINT_URL``) or any fsspec scheme. :func:`resolve` gives the pyarrow filesystem
and the in-filesystem path; :func:`local_copy` a local path (a cached copy of a URI).
"""

from __future__ import annotations

import glob
import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pf_ray.faults import StorageUnavailable
from pf_ray.specs import StorageConfig

log = logging.getLogger(__name__)


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    scheme = urlparse(path).scheme
    return len(scheme) > 1 and scheme != "file"


def _s3_filesystem(storage: StorageConfig) -> pafs.FileSystem:
    key = os.environ.get(storage.access_key_env)
    secret = os.environ.get(storage.secret_key_env)
    token = os.environ.get(storage.session_token_env)
    region = storage.region or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION") or "us-east-1"
    # the spec's endpoint, else the standard AWS SDK variables (MinIO, R2, SeaweedFS...)
    url = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL")
    endpoint = urlparse(url) if url else None
    if storage.client == "s3fs":
        import s3fs

        client_kwargs: dict[str, Any] = {"region_name": region}
        if url:
            client_kwargs["endpoint_url"] = url
        fs = s3fs.S3FileSystem(anon=storage.anonymous, key=key, secret=secret, token=token,
                               client_kwargs=client_kwargs, use_listings_cache=False)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    kwargs: dict[str, Any] = {"region": region, "anonymous": storage.anonymous,
                              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5)}
    if not storage.anonymous and key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=token)
    if endpoint is not None:
        kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
    return pafs.S3FileSystem(**kwargs)


def resolve(path: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """Filesystem and in-filesystem path for a local path or a URI.

    ``s3://`` goes through pyarrow's S3 client (or s3fs, per ``storage.client``) with the
    endpoint and credentials of ``storage``; other schemes go through fsspec.
    """
    storage = storage or StorageConfig()
    parsed = urlparse(path)
    if parsed.scheme in ("s3", "s3a"):
        return _s3_filesystem(storage), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if is_uri(path):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner
    local = path.removeprefix("file://")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))


def local_copy(path: str, storage: StorageConfig | None = None,
               cache_dir: str | None = None, parts: Sequence[str] | None = None) -> str:
    """A local path for a file or folder: itself when local, else a cached copy of the URI.

    Used to load model weights from object stores (``s3://bucket/models/x``). One process
    per machine downloads a URI: the copy is made under a file lock (``<target>.lock``),
    into a temporary name that is renamed and then marked complete (``<target>.complete``);
    the other processes wait for the lock and use the finished copy. A copy that fails
    leaves neither its temporary folder nor a marker, and the next call downloads again.

    ``parts``: for a folder, copy only these entries (files or sub-folders, relative to
    it; absent ones are skipped), e.g. ``("config.json", "tokenizer")`` for a model's
    tokenizer without its weights. Such a copy is cached apart from the whole folder's.
    """
    if not is_uri(path):
        return os.path.expanduser(path.removeprefix("file://"))
    import hashlib

    cache = cache_dir or os.environ.get("PF_RAY_CACHE", os.path.expanduser("~/.cache/pf-ray"))
    key = path if parts is None else "\0".join([path, *sorted(parts)])
    target = os.path.join(cache, "remote", hashlib.sha256(key.encode()).hexdigest()[:16],
                          posixpath.basename(path.rstrip("/")) or "object")
    done = f"{target}.complete"
    if os.path.exists(done):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(f"{target}.lock")
    try:
        lock.acquire(blocking=False)
    except Timeout:  # another process of this machine is copying it: wait for it
        log.info("waiting for another process's copy of %s", path)
        lock.acquire()
    try:
        if not os.path.exists(done):
            _download(path, storage, target, parts)
            open(done, "w").close()
    finally:
        lock.release()
    return target


def _download(path: str, storage: StorageConfig | None, target: str,
              parts: Sequence[str] | None) -> None:
    """Copy ``path`` to ``target`` through a temporary name (the caller holds the lock)."""
    # what a killed process left (a copy never marked complete, a temporary name) is junk
    for stale in [target, *glob.glob(f"{glob.escape(target)}.tmp-*")]:
        _remove(stale)
    fs, inner = resolve(path, storage)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path}: not found")
    if parts is not None and info.type != pafs.FileType.Directory:
        raise NotADirectoryError(f"{path}: parts {list(parts)} asked of a file")
    tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log.info("downloading %s -> %s", path, target)
    try:
        if info.type != pafs.FileType.Directory:
            with open(tmp, "wb") as f:
                f.write(read_bytes(fs, inner))
        elif parts is None:
            os.makedirs(tmp)
            _copy_folder(fs, inner, tmp)
        else:
            os.makedirs(tmp)
            for part in parts:
                _copy_entry(fs, posixpath.join(inner, part), os.path.join(tmp, part))
        os.replace(tmp, target)
    finally:
        _remove(tmp)  # gone after the rename; else what a failed copy wrote


def _copy_folder(fs: pafs.FileSystem, inner: str, local: str) -> None:
    pafs.copy_files(inner, local, source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())


def _copy_entry(fs: pafs.FileSystem, inner: str, local: str) -> None:
    """Copy one file or folder of a store to ``local`` (nothing when it is not there)."""
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.Directory:
        os.makedirs(local, exist_ok=True)
        _copy_folder(fs, inner, local)
    elif kind == pafs.FileType.File:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(read_bytes(fs, inner))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', for local paths and URIs alike."""
    return posixpath.join(base, *parts)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def confirm_missing(fs: pafs.FileSystem, path: str, exc: BaseException) -> BaseException:
    """What a failed read of ``path`` really says: ``exc`` itself, unless it is a
    ``FileNotFoundError`` of an fsspec filesystem and the file is not really missing; then
    the store's own error (to classify with :func:`pf_ray.faults.storage_fault`).

    pyarrow's ``FSSpecHandler.open_input_stream`` / ``open_input_file`` raise
    ``FileNotFoundError`` whenever fsspec's ``isfile`` says no, and ``isfile`` swallows
    every error: with ``s3fs`` a refused connection or a refused key reads as "not found".
    ``get_file_info`` lets the real error (``EndpointConnectionError``,
    ``PermissionError``) through. pyarrow's own filesystems report an outage as itself.
    """
    if not isinstance(exc, FileNotFoundError) or not isinstance(fs, pafs.PyFileSystem):
        return exc
    try:
        info = fs.get_file_info(path)
    except Exception as real:  # noqa: BLE001 - returned to be classified
        return real
    return exc if info.type != pafs.FileType.File else StorageUnavailable(
        f"{path} exists but could not be opened: {exc}")


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a file so that readers see all of it or nothing."""
    parent = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)  # rename(2): atomic on one filesystem
    else:
        # An object becomes visible only when its (multipart) upload completes.
        with fs.open_output_stream(path) as f:
            f.write(data)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(fs: pafs.FileSystem, folder: str, suffix: str = "") -> list[str]:
    """Sorted file paths directly under ``folder`` (empty when it does not exist)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(i.path for i in infos
                  if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                  and not i.base_name.startswith("."))
