"""The sandbox HubSpot's record resources, one at a time: list, create, read, update and
archive ``/crm/v3/objects/{type}`` records, and search them."""

from __future__ import annotations

from typing import Any

import numpy as np
from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.hubspot import search as search_engine
from crm_kpi_worker.sandbox.hubspot.objects import ObjectStore
from crm_kpi_worker.sandbox.hubspot.routes import (
    HubSpotError,
    PortalRoutes,
    _bool_arg,
    _int_arg,
    _list_arg,
    bad_request,
    not_found,
)

MAX_PAGE = 100
MAX_PAGE_WITH_HISTORY = 50


def _list_limit(asked: int, *, history: bool) -> int:
    """A list page's size: at most 100 records (more is served as 100); with property history
    more than 50 is refused with a 400, as HubSpot does (HubSpot/hubspot-api-python#143; the
    message is the sandbox's own: HubSpot's was not recorded there)."""
    if asked < 1:
        raise bad_request("limit must be at least 1", limit=[str(asked)])
    if history and asked > MAX_PAGE_WITH_HISTORY:
        raise bad_request(
            f"limit must be at most {MAX_PAGE_WITH_HISTORY} when propertiesWithHistory is"
            f" requested, got {asked}",
            limit=[str(asked)],
        )
    return min(asked, MAX_PAGE)


class RecordRoutes(PortalRoutes):
    """Records one at a time and their search; how written records are echoed."""

    def _render(
        self,
        store: ObjectStore,
        rows: Any,
        names: list[str] | None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        rows = np.asarray(rows, dtype=np.int64)
        self.stats.rows_served += len(rows)
        return self.portal.render(store, rows, names, **kwargs)

    def on_objects(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            body = self._body(request)
            if not isinstance(body, dict):
                raise bad_request("Invalid input JSON: expected an object")
            values = body.get("properties") or {}
            row = self._create(store, values)
            return self._json(self._written(store, [row], [values])[0], 201)
        args = request.args
        history = _list_arg(args, "propertiesWithHistory")
        limit = _list_limit(_int_arg(args.get("limit"), 10, "limit"), history=bool(history))
        archived = _bool_arg(args.get("archived"))
        rows = np.flatnonzero(store.archived if archived else ~store.archived)
        after = args.get("after")
        start = 0
        if after:
            after_id = _int_arg(after, 0, "after")
            start = int(np.searchsorted(store.ids[rows], after_id))
        page = rows[start : start + limit]
        body: dict[str, Any] = {
            "results": self._render(
                store,
                page,
                _list_arg(args, "properties") or None,
                with_history=history or None,
                associations=_list_arg(args, "associations") or None,
            )
        }
        if start + limit < len(rows):
            nxt = store.record_id(int(rows[start + limit]))
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return self._json(body)

    def _lookup(self, store: ObjectStore, object_id: str, id_property: str | None) -> int | None:
        if id_property and id_property != "hs_object_id":
            pdef = store.properties.get(id_property)
            if pdef is None or not pdef.unique:
                raise bad_request(
                    f"{id_property} is not a unique identifier property of {store.name}",
                    idProperty=[id_property],
                )
            return self.portal.find_unique(store, id_property, object_id)
        return store.row_of(object_id)

    def on_object(self, request: Request, object_type: str, object_id: str) -> Response:
        store = self._store(object_type)
        args = request.args
        row = self._lookup(store, object_id, args.get("idProperty"))
        if row is None:
            raise not_found()
        if request.method == "GET":
            if bool(store.archived[row]) != _bool_arg(args.get("archived")):
                raise not_found()
            return self._json(
                self._render(
                    store,
                    [row],
                    _list_arg(args, "properties") or None,
                    with_history=_list_arg(args, "propertiesWithHistory") or None,
                    associations=_list_arg(args, "associations") or None,
                )[0]
            )
        if store.archived[row]:
            raise not_found()
        if request.method == "DELETE":
            self.portal.archive(store, [row])
            return Response(status=204)
        body = self._body(request)
        values = (body or {}).get("properties") if isinstance(body, dict) else None
        parsed = self.portal.validate(store, values or {})
        self.portal.update(store, row, parsed)
        self.write_log.add(store.name, store.record_id(row))
        return self._json(self._written(store, [row], [values or {}])[0])

    def _written(
        self, store: ObjectStore, rows: list[int], values: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Written records as HubSpot echoes them: defaults plus the properties set."""
        out = []
        for row, props in zip(rows, values, strict=True):
            names = [*store.default_properties, *props]
            out.extend(self._render(store, [row], names))
        return out

    def _create(self, store: ObjectStore, values: Any) -> int:
        parsed = self.portal.validate(store, values)
        required = store.schema.get("requiredProperties", []) if store.custom else []
        missing = [p for p in required if parsed.get(p) is None]
        if missing:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Missing required properties: {', '.join(missing)}",
                errors=[
                    {
                        "message": f"{p} is required",
                        "code": "REQUIRED_PROPERTY",
                        "context": {"propertyName": [p]},
                    }
                    for p in missing
                ],
            )
        self._check_unique(store, parsed, None)
        return self.portal.create(store, parsed)

    def _check_unique(self, store: ObjectStore, parsed: dict[str, Any], row: int | None) -> None:
        for name, value in parsed.items():
            pdef = store.properties[name]
            if not pdef.unique or value is None:
                continue
            text = value if isinstance(value, str) else str(value)
            other = self.portal.find_unique(store, name, text)
            if other is not None and other != row:
                raise HubSpotError(
                    409,
                    "CONFLICT",
                    f"A {store.name} record with {name}={text} already exists"
                    f" (id {store.record_id(other)}).",
                    context={"id": [store.record_id(other)]},
                )

    def on_search(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        page = search_engine.search(store, self._body(request))
        body: dict[str, Any] = {
            "total": page.total,
            "results": self._render(store, page.rows, page.properties),
        }
        if page.next_after is not None:
            after = str(page.next_after)
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return self._json(body)
