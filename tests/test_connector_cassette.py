"""A fixed exchange, replayed: the connector's login and first queries are byte-for-byte what
was recorded against the sandbox (tests/cassettes, replayed with record_mode="none").

A change to the SOQL the connector sends, its headers' shape or the SOAP login envelope makes
the replay find no match and fail: such a change must be deliberate. To record again (after a
deliberate change): ``CRM_KPI_RECORD_CASSETTES=1 pytest tests/test_connector_cassette.py``.
Session ids and the password are filtered out before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vcr

from crm_kpi_worker.config import path_of
from crm_kpi_worker.connectors.retry import RetryPolicy
from crm_kpi_worker.connectors.salesforce import connect_salesforce
from crm_kpi_worker.connectors.salesforce.config import SalesforceSource
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sync.config_loader import load_config

CASSETTES = Path(__file__).parent / "cassettes"
RECORD = os.environ.get("CRM_KPI_RECORD_CASSETTES") == "1"
FILTERED_SESSION = "00DSb0000000001!FILTERED"


def _filter_request(request: Any) -> Any:
    if request.body:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        body = re.sub(r"(<n1:password>)[^<]*(</n1:password>)", r"\1FILTERED\2", body)
        request.body = body.encode()
    return request


def _filter_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response["body"]["string"]
    text = body.decode() if isinstance(body, bytes) else body
    text = re.sub(
        r"<sessionId>[^<]*</sessionId>", f"<sessionId>{FILTERED_SESSION}</sessionId>", text
    )
    text = re.sub(r'"access_token"\s*:\s*"[^"]*"', f'"access_token":"{FILTERED_SESSION}"', text)
    response["body"]["string"] = text.encode()
    return response


RECORDER = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="all" if RECORD else "none",
    match_on=["method", "scheme", "path", "query", "body"],
    filter_headers=["authorization", "cookie"],
    before_record_request=_filter_request,
    before_record_response=_filter_response,
    decode_compressed_response=True,
)


@contextmanager
def _endpoint() -> Iterator[tuple[str, Path | None]]:
    """The sandbox when recording; when replaying, an address nothing listens on."""
    if RECORD:
        with SalesforceSandbox.start(seed=42) as sandbox:
            yield sandbox.url, sandbox.ca_path
    else:
        yield "https://127.0.0.1:9", None


def test_login_and_first_queries_match_the_recorded_exchange() -> None:
    config = load_config(path_of("demo-salesforce.yaml"))
    demo = config.sources[0]
    assert isinstance(demo, SalesforceSource)
    if RECORD:
        (CASSETTES / "salesforce_login_and_stages.yaml").unlink(missing_ok=True)
    with _endpoint() as (url, ca_path):
        source = demo.with_changes(login_url=url, instance_url=None, ca_bundle=ca_path)
        with RECORDER.use_cassette(
            "salesforce_login_and_stages.yaml", allow_playback_repeats=False
        ) as cassette:
            connector = connect_salesforce(
                source, config.currency, environ={}, retry_policy=RetryPolicy(sleep=_no_sleep)
            )
            stages = [r for page in connector.pull("stages", None) for r in page.records]
        assert [s["ApiName"] for s in stages][:3] == ["Prospecting", "Qualification", "Demo"]
        assert connector.api_calls == 3
        if not RECORD:  # every recorded interaction was asked for, once, in order
            assert cassette.all_played and cassette.play_count == len(cassette) == 4
    recorded = (CASSETTES / "salesforce_login_and_stages.yaml").read_text()
    assert "Bearer" not in recorded and FILTERED_SESSION in recorded
    assert "<n1:password>FILTERED</n1:password>" in recorded


def _no_sleep(seconds: float) -> None:
    raise AssertionError("a replayed exchange needs no retry")
