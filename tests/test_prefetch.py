"""The pull's one-page read-ahead: order, errors, bounded memory, early stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from crm_kpi_worker.sync.prefetch import prefetched


def test_items_arrive_in_order() -> None:
    assert list(prefetched(iter(range(100)))) == list(range(100))
    assert list(prefetched(iter([]))) == []


def test_producer_error_is_raised_in_the_consumer_after_the_good_items() -> None:
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionError("page 3 failed")

    seen = []
    with pytest.raises(ConnectionError, match="page 3 failed"):
        for item in prefetched(pages()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_producer_never_runs_more_than_depth_items_ahead() -> None:
    depth = 2
    consumed = [0]
    too_far: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(200):
            # Item n can only be made once item n - depth - 1 left the queue: one item in
            # hand, `depth` queued (+1 for the consumer's count lagging its receipt).
            if n > consumed[0] + depth + 1:
                too_far.append(n)
            yield n

    for item in prefetched(pages(), depth=depth):
        assert item == consumed[0]
        consumed[0] += 1
    assert consumed[0] == 200
    assert too_far == []


def test_stopping_early_releases_the_producer() -> None:
    finished = threading.Event()

    def pages() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            finished.set()

    for item in prefetched(pages()):
        if item == 3:
            break
    assert finished.wait(timeout=5)


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(prefetched(iter([1]), depth=0))
