"""The status server: :class:`~.app.StatusApp` served by werkzeug's threaded WSGI server in a
daemon thread of the service, on ``runtime.http``'s host and port."""

from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from crm_kpi_worker.sync.status.app import StatusApp

__all__ = ["StatusServer"]

log = logging.getLogger("crm_kpi_worker.status")


class StatusServer:
    """Listening from :meth:`start` (which raises ``OSError`` when the port is taken) until
    :meth:`stop`."""

    def __init__(self, app: StatusApp, host: str, port: int) -> None:
        self.app = app
        self.host, self.port = host, port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> StatusServer:
        # One line per request (probes and scrapes every few seconds) is noise in the log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Bound here, so a port already taken raises OSError (werkzeug would exit the process).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listening = socket.create_server((self.host, self.port), family=family)
        try:
            self._server = make_server(
                self.host, self.port, self.app, threaded=True, fd=listening.fileno()
            )
        finally:
            listening.close()  # werkzeug holds its own duplicate
        self.port = int(self._server.socket.getsockname()[1])  # port 0: the one given
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="crm-kpi-status", daemon=True
        )
        self._thread.start()
        log.debug("status server listening at %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.close()

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
