"""Throwaway TLS for the sandbox CRMs: a CA made at start and a loopback server certificate.

simple-salesforce only speaks https://, so the sandbox must serve real TLS. Clients trust the
CA through its PEM file (the ``ca_bundle`` of a source's config).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class SandboxTLS:
    ca_path: Path  # PEM of the CA clients must trust
    server_context: ssl.SSLContext
    #: The server certificate's key and chain as PEM, for servers that do not take an
    #: SSLContext (the Pub/Sub API's gRPC server).
    server_key_pem: bytes = b""
    server_chain_pem: bytes = b""


def make_tls(directory: Path) -> SandboxTLS:
    """Make a CA and a server certificate for the loopback names; write the CA to directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="crm-kpi-worker sandbox")
    server_cert = ca.issue_cert(*LOOPBACK_NAMES)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca_path = directory / "sandbox-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return SandboxTLS(
        ca_path=ca_path,
        server_context=context,
        server_key_pem=server_cert.private_key_pem.bytes(),
        server_chain_pem=b"".join(blob.bytes() for blob in server_cert.cert_chain_pems),
    )
