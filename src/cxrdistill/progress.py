"""The one progress bar of every long loop (caching images, embedding a cohort, training epochs).

On a terminal it is rich's bar on stderr — description, bar, done/total, rate, elapsed time and ETA, optionally the
running loss; it is silent when disabled, when stderr is not a terminal (logs, pipes) and under CI. ::

    with Progress(enabled=True, unit="img") as bar:
        bar.start("caching images", total=1000, done=200)
        for _ in range(800):
            bar.advance()
"""
from __future__ import annotations

import os
import sys


class Progress:
    """A progress bar with one current task. ``unit``: shows a rate (``12.3 img/s``); ``loss``: shows the value
    passed to :meth:`advance`; ``transient``: the bar disappears when the loop ends."""

    def __init__(self, enabled: bool = True, *, unit: str | None = None, loss: bool = False,
                 transient: bool = False):
        self.enabled = bool(enabled) and sys.stderr.isatty() and os.environ.get("CI") is None
        self.unit, self.loss, self.transient = unit, loss, transient
        self._p = None
        self._task = None

    def __enter__(self) -> "Progress":
        if self.enabled and self._p is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            unit = self.unit

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    return Text(f"{task.speed:,.1f} {unit}/s" if task.speed else f"… {unit}/s",
                                style="progress.data.speed")

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            if unit:
                columns.append(Rate())
            if self.loss:
                columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
            columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
            self._p = RichProgress(*columns, console=Console(stderr=True), transient=self.transient)
            self._p.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
            self._p = self._task = None

    def close(self) -> None:
        """End the bar (what leaving the ``with`` block does)."""
        self.__exit__(None, None, None)

    def start(self, desc: str, total: int, done: int = 0) -> None:
        """Begin a task of ``total`` steps, ``done`` of them already finished; the previous task's row is hidden."""
        if self._p is not None:
            if self._task is not None:
                self._p.update(self._task, visible=False)
            self._task = self._p.add_task(desc, total=total, completed=done, loss=float("nan"))

    def advance(self, n: int = 1, loss: float | None = None) -> None:
        """``n`` more steps of the current task done (and the latest loss, when the bar shows it)."""
        if self._p is not None and self._task is not None:
            if loss is None:
                self._p.advance(self._task, n)
            else:
                self._p.update(self._task, advance=n, loss=float(loss))
