"""Progress bars for long steps, on stderr; silent when CODESIGN_NO_PROGRESS is set.

Library code reports progress through here and logs everything else: it never prints.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: int):
    """Yields ``advance(n)``; a rich progress bar when stderr is a terminal."""
    if os.environ.get("CODESIGN_NO_PROGRESS"):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
