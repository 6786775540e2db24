"""Live progress for the command line: a rich progress bar with reward, success and turns.

Invariant: purely presentational; the training loop runs the same without it.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from turnrl.engine.records.reporter import Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            self.progress.update(self._task, visible=self.progress.tasks[self._task].total is not None)
            self.progress.stop_task(self._task)
        self._task = self.progress.add_task(name, total=total, info="")

    def advance(self, completed: int, **fields) -> None:
        if self._task is None:
            return
        total = fields.pop("total", None)
        if total is not None:
            self.progress.update(self._task, total=total)
        info = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self.progress.update(self._task, completed=completed, info=info)

    def message(self, text: str) -> None:
        self.console.print(text)
