"""The progress display of ``pf-ray run``: one line per job, updated as shards commit."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ShardProgress:
    """Context manager; call it with each shard summary (``done``, ``total``, ``rows``...)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled
        self.rows = self.rejects = 0
        self.console = Console(file=sys.stderr)
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ShardProgress:
        if self.enabled:
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

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
