"""What a run says while it goes: one-line notes, and how far each stream and write has got.

The pipeline reports through a :class:`RunProgress`: ``progress("...")`` for a note,
``progress.advance(source, task, n, total=...)`` as records are pulled or written, and
``progress.finish(source, task)`` when a stream or object is done. A task is a stream name
(``deals``) or ``write <object>``. The expected total is the CRM's own count when it gives
one (Salesforce's ``totalSize``, HubSpot's search ``total``; see ``connectors.base.Page``).

- :class:`BarProgress`: an interactive ``sync --once`` (stderr is a terminal): a progress bar
  per stream and per written object (rich), notes and log lines printed above them.
- :class:`LogProgress`: the service, and any run without a terminal: the same progress as log
  lines (``event`` ``pull_progress``/``write_progress`` with the counts as fields), one per
  task every ``every_seconds`` at most, and one when the task is done: a few lines per run,
  not one per page.
- :class:`LineProgress`: the same lines handed to a callable (the demo prints them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BarProgress", "LineProgress", "LogProgress", "RunProgress", "as_run_progress"]

log = logging.getLogger("crm_kpi_worker.progress")

WRITE = "write "  # the prefix of a write task's name: "write Opportunity"


@dataclass
class _Task:
    done: int = 0
    total: int | None = None
    to_write: int = 0
    written: int = 0
    last_said: float | None = None


class RunProgress:
    """Says nothing (the base of the others, and what a run without a listener uses)."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], _Task] = {}

    def __call__(self, message: str) -> None:
        """A note: one line for people."""

    def advance(
        self,
        source: str,
        task: str,
        records: int,
        *,
        total: int | None = None,
        to_write: int = 0,
        written: int = 0,
    ) -> None:
        """``records`` more pulled (a stream) or compared with what the CRM holds
        (``write <object>``: ``to_write`` of them differ, ``written`` were sent and
        confirmed); ``total``: the expected count, when known."""
        state = self._tasks.setdefault((source, task), _Task())
        state.done += records
        state.to_write += to_write
        state.written += written
        if total is not None:
            state.total = total
        self._advanced(source, task, state)

    def finish(self, source: str, task: str) -> None:
        state = self._tasks.pop((source, task), _Task())
        self._finished(source, task, state)

    def close(self) -> None:
        """Stop displaying (the end of a run)."""

    def _advanced(self, source: str, task: str, state: _Task) -> None:
        pass

    def _finished(self, source: str, task: str, state: _Task) -> None:
        pass


def _line(source: str, task: str, state: _Task, *, done: bool) -> tuple[str, dict[str, Any]]:
    """A progress line and its fields."""
    if task.startswith(WRITE):
        obj = task[len(WRITE) :]
        of = f" of {state.total:,}" if state.total is not None else ""
        text = (
            f"{source}: {obj}: {state.done:,}{of} records compared, {state.to_write:,} to"
            f" write, {state.written:,} written{'' if done else ' so far'}"
        )
        return text, {
            "event": "write_done" if done else "write_progress",
            "source": source,
            "object": obj,
            "compared": state.done,
            "total": state.total,
            "to_write": state.to_write,
            "written": state.written,
        }
    if done:
        text = f"{source}: {task}: {state.done:,} records pulled"
    elif state.total:
        percent = min(100, round(100 * state.done / state.total))
        text = f"{source}: {task}: {state.done:,} of {state.total:,} records pulled ({percent}%)"
    else:
        text = f"{source}: {task}: {state.done:,} records pulled so far"
    return text, {
        "event": "pull_done" if done else "pull_progress",
        "source": source,
        "stream": task,
        "records": state.done,
        "total": state.total,
    }


class LineProgress(RunProgress):
    """Notes and progress lines through ``say``; a task's progress every ``every_seconds`` at
    most (0: each time), and always when it is done."""

    def __init__(
        self,
        say: Callable[[str], None],
        every_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._say = say
        self._every = every_seconds
        self._clock = clock

    def __call__(self, message: str) -> None:
        self._emit(message, {"event": "run_note"})

    def _emit(self, text: str, fields: dict[str, Any]) -> None:
        self._say(text)

    def _advanced(self, source: str, task: str, state: _Task) -> None:
        now = self._clock()
        if state.last_said is None and self._every > 0:
            state.last_said = now  # the first line comes after the interval, not at once
            return
        if state.last_said is None or now - state.last_said >= self._every:
            state.last_said = now
            self._emit(*_line(source, task, state, done=False))

    def _finished(self, source: str, task: str, state: _Task) -> None:
        self._emit(*_line(source, task, state, done=True))


class LogProgress(LineProgress):
    """:class:`LineProgress` to the log, each line with its fields."""

    def __init__(
        self, every_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(lambda _text: None, every_seconds, clock)

    def _emit(self, text: str, fields: dict[str, Any]) -> None:
        log.info(text, extra={k: v for k, v in fields.items() if v is not None})


class BarProgress(RunProgress):
    """Progress bars on stderr (rich): one per stream and written object, kept when done."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__()
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            redirect_stderr=True,
            redirect_stdout=False,
        )
        self._ids: dict[tuple[str, str], Any] = {}
        self._bars.start()

    def __call__(self, message: str) -> None:
        self._bars.console.print(message, markup=False, highlight=False)

    def _advanced(self, source: str, task: str, state: _Task) -> None:
        key = (source, task)
        label = f"{source}: {task}"
        note = (
            f"{state.to_write:,} to write, {state.written:,} written"
            if task.startswith(WRITE)
            else ""
        )
        if key not in self._ids:
            self._ids[key] = self._bars.add_task(label, total=state.total, note=note)
        self._bars.update(self._ids[key], completed=state.done, total=state.total, note=note)

    def _finished(self, source: str, task: str, state: _Task) -> None:
        key = (source, task)
        if key not in self._ids:  # a stream with no record: a full, empty bar
            self._ids[key] = self._bars.add_task(f"{source}: {task}", total=0, note="")
        # Done: the bar is full at what was actually read (the CRM's count may have moved).
        self._bars.update(self._ids[key], completed=state.done, total=state.done)

    def close(self) -> None:
        self._bars.stop()


def as_run_progress(progress: RunProgress | Callable[[str], None] | None) -> RunProgress:
    """What the pipeline reports to: a :class:`RunProgress` as is, a callable as the notes'
    and progress lines' receiver, nothing as silence."""
    if progress is None:
        return RunProgress()
    if isinstance(progress, RunProgress):
        return progress
    return LineProgress(progress)
