"""What the sandbox HubSpot's route groups share: HubSpot's error envelope, JSON in and out,
finding an object type's store, the batch answer, and reading query parameters and batch inputs.

The app (``server.py``) routes, authenticates and rate-limits; the route groups (``auth.py``,
``metadata.py``, ``records.py``, ``batches.py``) are mixins of it on top of
:class:`PortalRoutes`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.faults import FaultPlan
from crm_kpi_worker.sandbox.hubspot.formats import stamp
from crm_kpi_worker.sandbox.hubspot.objects import ObjectStore
from crm_kpi_worker.sandbox.hubspot.portal import HubSpotPortal, WriteError
from crm_kpi_worker.sandbox.serving import Stats as ServedStats
from crm_kpi_worker.sandbox.serving import WriteLog

JSON_TYPE = "application/json;charset=utf-8"


class HubSpotError(Exception):
    """An error answer: HubSpot's error envelope with its HTTP status."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, list[str]] | None = None,
        sub_category: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.sub_category = sub_category
        self.headers = headers or {}
        self.body = body  # a body of another shape (429s, OAuth errors)

    @classmethod
    def of(cls, exc: WriteError) -> HubSpotError:
        return cls(
            exc.status,
            exc.category,
            exc.message,
            errors=exc.errors or None,
            context=exc.context,
            sub_category=exc.sub_category,
        )

    def envelope(self, correlation_id: str) -> dict[str, Any]:
        if self.body is not None:
            return {**self.body, "correlationId": correlation_id}
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        }
        if self.sub_category:
            body["subCategory"] = self.sub_category
        if self.errors:
            body["errors"] = self.errors
        if self.context:
            body["context"] = self.context
        return body


def not_found(message: str = "resource not found") -> HubSpotError:
    return HubSpotError(404, "OBJECT_NOT_FOUND", message)


def bad_request(message: str, **context: list[str]) -> HubSpotError:
    return HubSpotError(400, "VALIDATION_ERROR", message, context=context or None)


class PortalRoutes:
    """The state and plumbing every route group of the app uses (the app sets the state)."""

    portal: HubSpotPortal
    faults: FaultPlan
    stats: ServedStats
    write_log: WriteLog
    base_url: str
    _lock: threading.Lock

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")),
            status=status,
            headers=headers,
            content_type=JSON_TYPE,
        )

    @staticmethod
    def _body(request: Request) -> Any:
        return json.loads(request.get_data(as_text=True) or "null")

    def _store(self, object_type: str) -> ObjectStore:
        try:
            return self.portal.store(object_type)
        except KeyError:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to infer object type from: {object_type}",
                context={"objectType": [object_type]},
            ) from None

    def _batch(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok: int = 200
    ) -> Response:
        now = stamp(self.portal.now_ms())
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return self._json(body, 207)
        return self._json(body, ok)


def _standard_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    }


def _inputs(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise bad_request("Invalid input JSON: the body needs a list of inputs")
    return body["inputs"]


def _id_of(item: Any) -> str:
    return str(item.get("id")) if isinstance(item, dict) else str(item)


def _int_arg(value: str | None, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {value!r}", **{name: [value]}) from None


def _bool_arg(value: str | None) -> bool:
    return str(value).lower() == "true"


def _list_arg(args: Any, name: str) -> list[str]:
    """A repeated query parameter, also accepting comma-separated values."""
    out: list[str] = []
    for value in args.getlist(name):
        out.extend(v for v in value.split(",") if v)
    return out
