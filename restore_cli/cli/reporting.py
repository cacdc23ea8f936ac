"""Batch reporting: progress for humans on stderr, results for programs on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from restore_cli.cli.common import stderr_console
from restore_cli.engine.batch import BatchSummary, FileResult


def emit_json(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


class ConsoleReporter:
    """A Rich bar with count and ETA on a terminal, plain lines otherwise, nothing with quiet.

    stdout gets one JSON line per file and a summary with `json_output`, else the written paths.
    """

    def __init__(self, label: str, json_output: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        self.label = label
        self.json_output = json_output
        self.quiet = quiet
        self.verbose = verbose
        self.console = stderr_console()
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        if self.quiet:
            return
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn(f"[bold]{self.label}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task_id = self.progress.add_task(self.label, total=total)

    def file_done(self, result: FileResult) -> None:
        self.done += 1
        if self.json_output:
            emit_json(result.to_json())
        elif result.status == "ok" and result.target is not None:
            sys.stdout.write(f"{result.target}\n")
            sys.stdout.flush()
        if result.status == "failed":
            # Failures are shown even with -q: they change the exit code.
            self._line(f"[red]failed[/red] {result.error}", force=True)
        elif not self.quiet and self.progress is None:
            note = "skipped (output exists)" if result.status == "skipped" else f"{result.seconds:.2f}s"
            self._line(f"[{self.done}/{self.total}] {result.source} -> {result.target} {note}")
        if self.progress is not None:
            self.progress.advance(self.task_id)

    def _line(self, text: str, force: bool = False) -> None:
        if self.quiet and not force:
            return
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)

    def finish(self, summary: BatchSummary) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.json_output:
            emit_json(summary.to_json())
        if not self.quiet:
            state = "interrupted" if summary.interrupted else "done"
            self.console.print(
                f"{self.label}: {state}: {summary.count('ok')} ok, {summary.count('skipped')} skipped, "
                f"{summary.count('failed')} failed in {summary.seconds:.1f}s",
                highlight=False,
            )
