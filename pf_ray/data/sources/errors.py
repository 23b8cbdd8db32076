"""The one exception of the source adapters: a record that cannot become a sample.

It sits in a module of its own, below every other module of the folder, because the file
readers, the field checks, the adapters and the unit reader all raise or catch it.
"""

from __future__ import annotations


class RecordError(Exception):
    """A record (or a whole file) that cannot become a sample, with a machine-readable
    reason: the unit reader turns it into a reject row, never a crash."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
