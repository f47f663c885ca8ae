"""The one progress bar: drawn on a terminal (real pseudo-terminal), silent when disabled, piped or under CI."""
from __future__ import annotations

import io
import os
import pty
import sys

import pytest

from cxrdistill.progress import Progress


def _run(bar: Progress) -> None:
    with bar:
        bar.start("first", total=3)
        bar.advance(3)
        bar.start("caching images", total=10, done=4)
        for _ in range(6):
            bar.advance(loss=0.25)


def test_on_a_terminal_the_bar_shows_the_task_count_rate_and_loss(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", term)
    try:
        bar = Progress(True, unit="img", loss=True)
        assert bar.enabled
        _run(bar)
        term.flush()
        out = b""
        os.set_blocking(master, False)
        while True:
            try:
                chunk = os.read(master, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        term.close()
        os.close(master)
    text = out.decode("utf-8", "replace")
    assert "caching images" in text and "10/10" in text and "img/s" in text and "loss 0.2500" in text


@pytest.mark.parametrize("case", ["disabled", "piped", "ci"])
def test_off_a_terminal_or_when_disabled_nothing_is_written(monkeypatch, case):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    monkeypatch.delenv("CI", raising=False)
    if case == "ci":
        monkeypatch.setattr(buf, "isatty", lambda: True)
        monkeypatch.setenv("CI", "true")
    if case == "disabled":
        monkeypatch.setattr(buf, "isatty", lambda: True)
    bar = Progress(case != "disabled", unit="img")
    assert not bar.enabled
    _run(bar)
    assert buf.getvalue() == ""
