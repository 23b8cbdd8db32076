"""Headless Chromium for the page tests, driven through chromedriver's W3C WebDriver HTTP
API (Debian's ``chromium`` + ``chromium-driver``; ``scripts/setup.sh --dev`` installs them).

    with chromium(tmp_path / "profile") as browser:
        browser.open(url)
        browser.js("return document.title;")
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-dev-shm-usage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One WebDriver session: the calls the page tests make."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A WebDriver command (``path`` below the session, or absolute with a leading
        ``//``); its ``value``."""
        url = self.base + (path[1:] if path.startswith("//")
                           else f"/session/{self.session}{path}")
        r = requests.request(method, url, json=body, timeout=60)
        assert r.status_code == 200, (path, r.text[:500])
        return r.json().get("value")

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def js(self, script: str) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def find(self, css: str) -> str:
        """The element id of the first match of ``css``."""
        return next(iter(self.call("POST", "/element", {"using": "css selector",
                                                        "value": css}).values()))

    def type(self, css: str, text: str) -> None:
        """Send keys to an element (a file input takes a path)."""
        self.call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def console(self) -> list[dict[str, Any]]:
        """The browser console's entries so far (needs ``console_log=True``)."""
        return self.call("POST", "/se/log", {"type": "browser"})


@contextmanager
def chromium(profile: Path, *, args: Sequence[str] = (),
             console_log: bool = False) -> Iterator[Browser]:
    """A chromedriver process and one headless Chromium session, closed on exit."""
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "needs Debian's chromium and chromium-driver (scripts/setup.sh --dev installs them)"
    port = _free_port()
    driver = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    browser = Browser(port)
    try:
        for _ in range(100):
            try:
                if requests.get(f"{browser.base}/status", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        always: dict[str, Any] = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": [*ARGS, *args, f"--user-data-dir={profile}"]}}
        if console_log:
            always["goog:loggingPrefs"] = {"browser": "ALL"}
        browser.session = browser.call("POST", "//session",
                                       {"capabilities": {"alwaysMatch": always}})["sessionId"]
        yield browser
    finally:
        if browser.session:
            requests.delete(f"{browser.base}/session/{browser.session}", timeout=30)
        driver.terminate()
        driver.wait(timeout=30)
