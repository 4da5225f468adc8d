"""Fetch the next page while the current one is normalized and stored.

A pull is I/O (the CRM builds and sends a page) then CPU (we normalize and store it). Reading
one page ahead in a background thread overlaps the two. The queue is bounded, so memory holds
at most ``depth`` pages more than a sequential pull; pages keep their order, so cursors are
still saved in order; an error in the producer is raised in the consumer.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_ITEM, _DONE, _ERROR = range(3)
_POLL_SECONDS = 0.1


def prefetched(items: Iterator[T], *, depth: int = 1, name: str = "prefetch") -> Iterator[T]:
    """``items``, produced by a background thread at most ``depth`` items ahead."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    slots: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: int, value: object) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(_ITEM, item):
                    return  # the consumer stopped early
            put(_DONE, None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_ERROR, exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's clean-up runs now, not at garbage collection

    # The producer's log lines carry the consumer's run id and source (``sync.logs``).
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(produce,), name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _DONE:
                return
            else:
                assert isinstance(value, BaseException)
                raise value
    finally:
        stop.set()
        worker.join(timeout=_POLL_SECONDS * 2)
