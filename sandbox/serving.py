"""What both sandbox CRMs share as servers: a work folder with a throwaway TLS CA, a loopback
HTTPS listener whose ``Date`` header follows the CRM's clock, and the serve/stop life cycle."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.faults import FaultPlan, FaultRule
from crm_kpi_worker.sandbox.tls import LOOPBACK_NAMES, SandboxTLS, make_tls

__all__ = ["AdminRoutes", "LoopbackServer", "RecordWrite", "Stats", "WriteLog"]


@dataclass
class Stats:
    """What a sandbox served: for tests and benchmarks (API calls vs the minimum). Each
    sandbox adds its own counters."""

    api_calls: int = 0
    rows_served: int = 0
    by_route: dict[str, int] = field(default_factory=dict)

    def count(self, route: str) -> None:
        self.by_route[route] = self.by_route.get(route, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "by_route": dict(self.by_route)}


@dataclass(frozen=True)
class RecordWrite:
    """One record written by one API call."""

    object: str
    record_id: str
    client: Any  # who sent the call: see WriteLog.identify_client


class WriteLog:
    """Every record the CRM's write calls changed, with who sent each call: tests check that no
    record was written by two processes. ``client`` is the peer's ``(host, port)``, or what
    ``identify_client(host, port)`` says, asked as the request arrives (the connection is open
    then: a test can find the process that holds it)."""

    def __init__(self) -> None:
        self.entries: list[RecordWrite] = []
        self.identify_client: Callable[[str, int], Any] | None = None
        self._lock = threading.Lock()
        self._serving = threading.local()

    @contextlib.contextmanager
    def serving(self, environ: dict[str, Any]) -> Any:
        """Within the block, writes are from the request of ``environ`` (its client is asked
        for at once: a request held by a slow fault may outlive its sender)."""
        peer = (str(environ.get("REMOTE_ADDR", "")), int(environ.get("REMOTE_PORT") or 0))
        identify = self.identify_client
        self._serving.client = peer if identify is None else identify(*peer)
        try:
            yield
        finally:
            self._serving.client = None

    def add(self, object: str, record_id: str) -> None:
        client = getattr(self._serving, "client", None)
        with self._lock:
            self.entries.append(RecordWrite(object, record_id, client))

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()


class AdminRoutes:
    """The sandbox's own routes, not part of any CRM's API: fault rules (``/_sandbox/faults``:
    GET lists, POST adds, DELETE clears) and what was served (``/_sandbox/stats``). The app
    counts under ``_lock`` and answers JSON through ``_json``."""

    faults: FaultPlan
    stats: Stats
    _lock: threading.Lock
    _json: Callable[..., Response]

    def on_admin_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = json.loads(request.get_data(as_text=True) or "null")
                rule = self.faults.add(FaultRule.from_json(body or {}))
            except (TypeError, ValueError) as exc:
                return self._json({"error": str(exc)}, 400)
            return self._json(rule.to_json(), 201)
        if request.method == "DELETE":
            self.faults.clear()
            return Response(status=204)
        return self._json([rule.to_json() for rule in self.faults.rules()])

    def on_admin_stats(self, request: Request) -> Response:
        with self._lock:
            return self._json(self.stats.to_json())


class LoopbackServer:
    """Base of the sandboxes: call :meth:`_prepare` first, then :meth:`_bind` with the app."""

    thread_name = "sandbox"
    app: Any  # the WSGI app, with ``faults`` and ``stats``
    ca_path: Path
    port: int
    url: str
    workdir: Path

    @classmethod
    def start(
        cls,
        *,
        seed: int = 42,
        deals: int | None = None,
        reference_date: dt.date | None = None,
        **kwargs: Any,
    ) -> Self:
        """A sandbox over generated data, serving in a background thread."""
        from crm_kpi_worker.sandbox.generator import generate

        sandbox = cls(generate(seed=seed, deals=deals, reference_date=reference_date), **kwargs)
        sandbox.serve_in_background()
        return sandbox

    @property
    def faults(self) -> FaultPlan:
        return self.app.faults  # type: ignore[no-any-return]

    @property
    def stats(self) -> Any:
        return self.app.stats

    def _prepare(self, host: str, workdir: Path | str | None, prefix: str) -> SandboxTLS:
        """Check the host is loopback, make the work folder and the TLS material."""
        if host not in LOOPBACK_NAMES:
            raise ValueError(
                "the sandbox serves loopback only: host must be 127.0.0.1, localhost or ::1"
            )
        self._tempdir = tempfile.TemporaryDirectory(prefix=prefix) if workdir is None else None
        self.workdir = Path(self._tempdir.name) if self._tempdir else Path(str(workdir))
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(self.workdir)
        self.ca_path = tls.ca_path
        self._thread: threading.Thread | None = None
        return tls

    def _bind(
        self,
        app: Any,
        tls: SandboxTLS,
        host: str,
        port: int,
        now_seconds: Callable[[], float],
    ) -> None:
        """Listen on ``host:port`` (0: a free port) and set ``port`` and ``url``."""
        # Bind here: werkzeug answers a busy port by printing and calling sys.exit().
        listener = _listen(host, port, self._tempdir)
        try:
            self._server: BaseWSGIServer = make_server(
                host,
                port,
                app,
                threaded=True,
                request_handler=_handler_for(now_seconds),
                ssl_context=tls.server_context,
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # werkzeug holds its own duplicate of the descriptor
        self.port = int(self._server.server_address[1])
        netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"https://{netloc}"

    def serve_in_background(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tempdir is not None:
            with contextlib.suppress(OSError):
                self._tempdir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(now_seconds: Callable[[], float]) -> type[WSGIRequestHandler]:
    """A request handler whose Date header follows the CRM's clock (tests may move it)."""

    class Handler(WSGIRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return super().date_time_string(now_seconds() if timestamp is None else timestamp)

    return Handler


def _listen(
    host: str, port: int, tempdir: tempfile.TemporaryDirectory[str] | None
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        if tempdir is not None:
            tempdir.cleanup()
        raise
    return listener
