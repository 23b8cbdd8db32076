"""What ``pf-ray run`` writes for a person: step lines, plain progress off a terminal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from pf_ray.jobs import progress
from pf_ray.jobs.progress import ShardProgress, ray_console
from pf_ray.train.loop import console_line, quiet_worker_logging, step_line


def events(total: int) -> Iterator[dict[str, int]]:
    return ({"done": k, "total": total, "rows": 10, "rejects": 1} for k in range(1, total + 1))


def test_shard_progress_off_a_terminal_writes_plain_lines() -> None:
    out = io.StringIO()
    with ShardProgress("synthetic", file=out, interval_s=3600) as bar:
        for event in events(5):
            bar(event)
    lines = out.getvalue().splitlines()
    # the first update and the last; the others fell within the interval
    assert [line.rsplit(",", 1)[0] for line in lines] == [
        "synthetic: 1/5 shards, 10 rows, 1 rejects", "synthetic: 5/5 shards, 50 rows, 5 rejects"]
    assert "\x1b" not in out.getvalue()


def test_shard_progress_every_update_without_interval_and_none_when_disabled() -> None:
    out = io.StringIO()
    with ShardProgress("distort", file=out, interval_s=0) as bar:
        for event in events(3):
            bar(event)
    assert len(out.getvalue().splitlines()) == 3
    quiet = io.StringIO()
    with ShardProgress("distort", enabled=False, file=quiet) as bar:
        for event in events(3):
            bar(event)
    assert quiet.getvalue() == "" and bar.rows == 30  # still counts


def test_ray_console_plain_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert ray_console(True) is False
    assert progress.os.environ["RAY_COLOR_PREFIX"] == "0"
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")  # a user's choice wins
    ray_console(True)
    assert progress.os.environ["RAY_COLOR_PREFIX"] == "1"


def test_ray_console_keeps_bars_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(progress, "interactive", lambda: True)
    assert ray_console(True) is True and ray_console(False) is False
    assert "RAY_COLOR_PREFIX" not in progress.os.environ


def test_step_line_and_console_line(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {"step": 2, "epoch": 0, "loss": 1.23456, "lr": 1e-4, "grad_norm": 0.5,
               "tokens_per_s": 99.6, "images_unreadable": 0}
    line = step_line("run", 10, metrics)
    assert line == "[run] step 2/10 epoch 0 loss 1.2346 lr 1.00e-04 grad_norm 0.500 100 tok/s"
    assert step_line("run", 10, {**metrics, "images_unreadable": 3}).endswith(
        " unreadable images 3")
    console_line(line)
    assert capsys.readouterr().out == line + "\n"


def test_quiet_worker_logging_silences_train_reports() -> None:
    from ray.train.v2._internal.execution import context

    root = logging.getLogger()
    saved = root.level, context.logger.level
    try:
        quiet_worker_logging(logging.INFO)  # pf-ray -v: INFO from libraries...
        assert root.level == logging.INFO
        assert not context.logger.isEnabledFor(logging.INFO)  # ...but never each report
        quiet_worker_logging()
        assert root.level == logging.WARNING
    finally:
        root.setLevel(saved[0])
        context.logger.setLevel(saved[1])
