"""Progress bars on stderr (rich), silent when asked or when output is scripted."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["progress_bar", "stderr_console"]

stderr_console = Console(stderr=True)


class _Silent:
    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool = True):
    if not enabled:
        yield _Silent()
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console, transient=True) as bar:
        yield bar
