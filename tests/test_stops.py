"""The signal handler of a run: the first signal asks the run to stop, any later one (even one
handled while the first handler is still running) stops the process at once."""

from __future__ import annotations

import signal

import pytest

from crm_kpi_worker.sync import stops
from crm_kpi_worker.sync.stops import StopRequest, stop_on_signals


@pytest.fixture
def deaths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    died: list[int] = []
    monkeypatch.setattr(stops, "_die_now", died.append)
    return died


def test_the_first_signal_asks_the_run_to_stop_and_the_second_stops_at_once(
    deaths: list[int],
) -> None:
    with stop_on_signals(grace=60) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set() and stop.reason == "stopped by SIGTERM"
        assert deaths == []
        signal.raise_signal(signal.SIGINT)
        assert deaths == [signal.SIGINT]


def test_a_second_signal_handled_inside_the_first_handler_stops_at_once(
    deaths: list[int],
) -> None:
    class SignalledWhileSetting(StopRequest):
        """The second SIGTERM lands while the first handler is recording the request."""

        def request(self, reason: str) -> None:
            signal.raise_signal(signal.SIGTERM)  # handled here, before this one returns
            super().request(reason)

    with stop_on_signals(SignalledWhileSetting(), grace=60) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
    assert deaths == [signal.SIGTERM]


def test_the_handlers_in_place_before_the_block_come_back(deaths: list[int]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(grace=60):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert deaths == []
