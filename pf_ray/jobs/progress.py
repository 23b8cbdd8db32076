"""The progress display of ``pf-ray run``: one line per job, updated as shards commit.

On a terminal, a rich progress bar on stderr. Elsewhere (a log file, a pipe, CI) plain
lines without escape sequences: the first update, then at most one every
``interval_s`` seconds, and the last one. :func:`ray_console` does the same for the output
that Ray forwards from its workers (colour codes, Ray Data's progress bars).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def interactive() -> bool:
    """True when stdout and stderr are both terminals: bars and colours are welcome."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def plain_console_env() -> None:
    """Outside a terminal, make Ray's console output plain: call before ``import ray``.

    ``RAY_DEDUP_LOGS=0``: Ray's "[repeated Nx across cluster]" notes are coloured and are
    read from the environment when ray is imported, so repeated lines are printed as they
    come instead. ``RAY_COLOR_PREFIX=0``: worker prefixes without colour. Values already
    set win.
    """
    if not interactive():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def ray_console(progress: bool) -> bool:
    """Set up this (driver) process's console for Ray; returns whether to draw progress bars.

    Not interactive: :func:`plain_console_env` (its ``RAY_COLOR_PREFIX`` is read as each line
    is printed, so it still takes effect here; ``RAY_DEDUP_LOGS`` only if ray was not imported
    yet), and no Ray Data progress bars: bars drawn from a worker process (training) reach
    this console as cursor movements whatever it is. Use the result for
    ``DataContext.enable_progress_bars``.
    """
    if interactive():
        return progress
    plain_console_env()
    return False


class ShardProgress:
    """Context manager; call it with each shard summary (``done``, ``total``, ``rows``...)."""

    def __init__(self, label: str, enabled: bool = True, *, file: TextIO | None = None,
                 interval_s: float = 10.0):
        self.label, self.enabled, self.interval_s = label, enabled, interval_s
        self.rows = self.rejects = 0
        self.console = Console(file=file or sys.stderr)
        self._progress: Progress | None = None
        self._task: Any = None
        self._t0 = self._last_line = 0.0

    def __enter__(self) -> ShardProgress:
        self._t0 = time.monotonic()
        self._last_line = self._t0 - self.interval_s
        if self.enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("shards  {task.fields[rows]} rows  {task.fields[rejects]} rejects"),
                TimeElapsedColumn(), console=self.console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=None, rows=0, rejects=0)
        return self

    def __call__(self, event: dict[str, Any]) -> None:
        self.rows += int(event.get("rows", 0))
        self.rejects += int(event.get("rejects", 0))
        if self._progress is not None:
            self._progress.update(self._task, completed=event["done"], total=event["total"],
                                  rows=self.rows, rejects=self.rejects)
        elif self.enabled:
            self._plain_line(event["done"], event["total"])

    def _plain_line(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_line < self.interval_s:
            return
        self._last_line = now
        self.console.file.write(f"{self.label}: {done}/{total} shards, {self.rows} rows, "
                                f"{self.rejects} rejects, {now - self._t0:.0f}s\n")
        self.console.file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
