"""The Pub/Sub API's wire definition (``pubsub_api.proto``, package ``eventbus.v1``) as Python
classes, shared by the Salesforce connector and the sandbox's Pub/Sub server.

The classes are generated at run time by grpcio-tools (``grpc.protos_and_services``) from the
.proto that ships in this package, instead of committing generated ``_pb2`` files: the .proto
stays the one source, and generated code never drifts from the installed protobuf runtime.
Generation happens once per process, on first use, so importing the connector package stays
cheap for runs that never touch Pub/Sub.

grpcio-tools finds a .proto through ``sys.path`` (the path given is relative to an entry of
it); the entry that holds ``crm_kpi_worker/`` is site-packages for an installed wheel but the
repository root for an editable install (whose finder maps packages without a path entry), so
:func:`load_pubsub_wire` puts the right root on ``sys.path`` for the duration of the load.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The .proto's path below the folder that holds the ``crm_kpi_worker`` package. It also names
# the generated modules (crm_kpi_worker.connectors.salesforce.pubsub_api_pb2, ..._pb2_grpc) and
# the file in protobuf's descriptor pool, so it cannot clash with another copy of the .proto.
PROTO_RELATIVE_PATH = "crm_kpi_worker/connectors/salesforce/pubsub_api.proto"

# Salesforce's limit on FetchRequest.num_requested (a larger number is refused).
MAX_NUM_REQUESTED = 100


@dataclass(frozen=True)
class PubSubWire:
    """The generated modules: ``messages`` holds the message classes and ``ReplayPreset``
    (e.g. ``wire.messages.FetchRequest``), ``services`` the stub and servicer."""

    messages: Any
    services: Any

    @property
    def stub_class(self) -> Any:
        """``PubSubStub(channel)``: the client side."""
        return self.services.PubSubStub

    @property
    def servicer_class(self) -> Any:
        """``PubSubServicer``: the server side's base class."""
        return self.services.PubSubServicer

    def add_servicer_to_server(self, servicer: Any, server: Any) -> None:
        self.services.add_PubSubServicer_to_server(servicer, server)


_lock = threading.Lock()
_loaded: PubSubWire | None = None


def load_pubsub_wire() -> PubSubWire:
    """The wire classes, generated on the first call and cached for the process."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _generate()
        return _loaded


def _package_root() -> Path:
    """The folder holding ``crm_kpi_worker/`` with this .proto in it: site-packages when
    installed, the repository root (whose ``crm_kpi_worker/`` links to the top-level folders)
    for an editable install."""
    here = Path(__file__).resolve()
    for candidate in here.parents:
        if (candidate / PROTO_RELATIVE_PATH).is_file():
            return candidate
    raise FileNotFoundError(
        f"{PROTO_RELATIVE_PATH} is not beside {here}: the package was installed without it"
    )


def _generate() -> PubSubWire:
    import grpc

    root = str(_package_root())
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        messages, services = grpc.protos_and_services(PROTO_RELATIVE_PATH)
    finally:
        if added:
            sys.path.remove(root)
    return PubSubWire(messages=messages, services=services)
