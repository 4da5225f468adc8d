"""Clean stops: SIGTERM or SIGINT ask the run to stop; a second signal stops at once.

A run asked to stop finishes the page or write batch in hand (each is committed whole), records
itself ``interrupted`` with what it had done, and returns; the command then exits 0. The run
checks the request between pages and batches, so the wait is one CRM call at most; should that
call hang beyond :data:`GRACE_SECONDS` (its own timeout and retries), the process stops at once,
as on a second signal, exiting ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). Pages and
batches are saved whole, so even then nothing is lost: the next run marks the run it finds left
``running`` as ``interrupted`` and resumes where it stopped.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["GRACE_SECONDS", "RunStopped", "StopRequest", "stop_on_signals"]

log = logging.getLogger("crm_kpi_worker")

#: The longest a run takes to stop after SIGTERM/SIGINT before the process stops at once.
GRACE_SECONDS = 30.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Set when the run should stop at its next page or batch (a signal, or the service
    shutting down); thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class RunStopped(Exception):
    """Raised inside a run at a page or batch boundary when it was asked to stop (or lost its
    lock); the pipeline records the run ``interrupted``."""

    def __init__(self, reason: str, *, lock_lost: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lock_lost = lock_lost


def _die_now(signum: int) -> None:
    """End the process as the signal's default action would (exit status 128 + signum)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextmanager
def stop_on_signals(
    stop: StopRequest | None = None, *, grace: float = GRACE_SECONDS
) -> Iterator[StopRequest]:
    """Within the block, the first SIGTERM/SIGINT sets ``stop`` and starts a ``grace``
    watchdog; a second one, or the watchdog, ends the process at once. Main thread only."""
    stop = stop or StopRequest()
    previous: dict[int, Any] = {}
    timers: list[threading.Timer] = []

    def watchdog(signum: int) -> None:
        log.error("the run did not stop within %.0f s of the signal: stopping now", grace)
        _die_now(signum)

    # A handler can be entered again before it returns (the second signal is handled at the
    # next bytecode of the first handler), so "is this the first?" is one C call, never a
    # check then a set.
    received = itertools.count()

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if next(received) or stop.is_set():
            log.warning("%s again: stopping now", name)
            _die_now(signum)
            return
        stop.request(f"stopped by {name}")
        timer = threading.Timer(grace, watchdog, args=(signum,))
        timer.daemon = True
        timer.start()
        timers.append(timer)
        log.warning(
            "%s received: finishing the page or batch in hand, then stopping (at most %.0f s;"
            " %s again stops at once)",
            name,
            grace,
            name,
        )

    for signum in _SIGNALS:
        previous[signum] = signal.signal(signum, handle)
    try:
        yield stop
    finally:
        for timer in timers:  # stopped in time: no watchdog outlives the block
            timer.cancel()
        for number, handler in previous.items():
            signal.signal(number, handler)
