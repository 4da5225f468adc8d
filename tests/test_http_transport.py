"""The connectors' HTTP transport: timeouts, CA trust, login routing."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
import trustme

from crm_kpi_worker.connectors.http import TransportAdapter, build_session, build_ssl_context


def test_every_call_gets_the_default_timeout() -> None:
    # A loopback server that accepts and never answers: the call must give up, not hang.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        thread.start()
        session = build_session(timeout=0.2)
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(f"http://127.0.0.1:{port}/")
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()


def test_routes_send_a_host_to_another_base_url() -> None:
    adapter = TransportAdapter(
        ssl_context=build_ssl_context(), routes={"login.salesforce.com": "https://127.0.0.1:9/x"}
    )
    assert (
        adapter._route("https://login.salesforce.com/services/Soap/u/59.0?a=1")
        == "https://127.0.0.1:9/services/Soap/u/59.0?a=1"
    )
    assert adapter._route("https://other.example.com/p") == "https://other.example.com/p"


def test_routes_must_be_https() -> None:
    with pytest.raises(ValueError, match="must be an https:// URL"):
        build_session(routes={"login.salesforce.com": "http://127.0.0.1:8080"})


def test_missing_or_empty_ca_bundle_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_ssl_context(tmp_path / "nope.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="no usable PEM certificate"):
        build_ssl_context(garbage)


def test_ca_bundle_is_added_to_the_system_trust(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    plain = build_ssl_context()
    extended = build_ssl_context(path)
    assert extended.cert_store_stats()["x509_ca"] == plain.cert_store_stats()["x509_ca"] + 1


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        build_session(timeout=0)
