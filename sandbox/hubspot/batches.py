"""The sandbox HubSpot's batch record resources (``/crm/v3/objects/{type}/batch/{action}``):
read, create, update, upsert and archive up to 100 inputs (50 with property history), with
per-record failures answered as HTTP 207."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.hubspot.objects import ObjectStore
from crm_kpi_worker.sandbox.hubspot.records import RecordRoutes
from crm_kpi_worker.sandbox.hubspot.routes import (
    HubSpotError,
    _bool_arg,
    _id_of,
    _inputs,
    _standard_error,
    bad_request,
    not_found,
)

MAX_BATCH = 100
MAX_BATCH_WITH_HISTORY = 50
HISTORY_CAP_MESSAGE = (
    "The maximum number of inputs supported in a batch request for property histories is 50"
)


class BatchRoutes(RecordRoutes):
    """Many records a call, with the record routes' lookups and echoes."""

    def on_batch(self, request: Request, object_type: str, action: str) -> Response:
        store = self._store(object_type)
        body = self._body(request)
        inputs = _inputs(body)
        history = body.get("propertiesWithHistory") if action == "read" else None
        if history and len(inputs) > MAX_BATCH_WITH_HISTORY:
            raise bad_request(HISTORY_CAP_MESSAGE, inputs=[str(len(inputs))])
        if len(inputs) > MAX_BATCH:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Batch input size {len(inputs)} exceeds the limit of {MAX_BATCH} inputs",
                errors=[
                    {
                        "message": f"size must be between 1 and {MAX_BATCH}",
                        "code": "TOO_MANY_INPUTS",
                        "in": "inputs",
                    }
                ],
            )
        if action == "read":
            return self._batch_read(request, store, body, inputs)
        if action == "archive":
            rows = [store.row_of(_id_of(item)) for item in inputs]
            self.portal.archive(store, [r for r in rows if r is not None])
            return Response(status=204)
        if action == "create":
            return self._batch_create(request, store, inputs)
        if action == "update":
            return self._batch_update(request, store, inputs)
        if action == "upsert":
            return self._batch_upsert(request, store, inputs)
        raise not_found(f"No route for POST {request.path}")

    def _batch_read(
        self, request: Request, store: ObjectStore, body: dict[str, Any], inputs: list[Any]
    ) -> Response:
        id_property = body.get("idProperty")
        archived = _bool_arg(request.args.get("archived"))
        rows, missing = [], []
        for item in inputs:
            key = _id_of(item)
            row = self._lookup(store, key, id_property)
            if row is None or bool(store.archived[row]) != archived:
                missing.append(key)
            elif row not in rows:
                rows.append(row)
        results = self._render(
            store,
            rows,
            body.get("properties") or None,
            with_history=body.get("propertiesWithHistory") or None,
        )
        errors = []
        if missing:
            errors.append(
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {store.singular.upper() or store.name} objects, they may"
                    " be deleted or not exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return self._batch(results, errors)

    def _failing(
        self, request: Request, record_id: str | None, named: str | None = None
    ) -> dict[str, Any] | None:
        """An injected per-record failure. A rule's ``record_ids`` match the record's HubSpot
        id or the id the input gave (``named``: an idProperty value for upserts), and the
        error names the record as the input did, in ``context.ids``, as HubSpot's batch
        errors do; a created record has nothing to be named by."""
        named = named or record_id
        rule = self.faults.failing_record(record_id, request.method, request.path, key=named)
        if rule is None:
            return None
        return _standard_error(
            "VALIDATION_ERROR",
            f"Record {named or '(new)'} could not be written (injected write failure).",
            {"ids": [named]} if named else {},
        )

    def _batch_create(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        for item in inputs:  # a bad value refuses the whole batch, as HubSpot does
            self.portal.validate(store, (item or {}).get("properties") or {})
        rows, written, errors = [], [], []
        for item in inputs:
            values = (item or {}).get("properties") or {}
            failure = self._failing(request, None)
            if failure is not None:
                errors.append(failure)
                continue
            rows.append(self._create(store, values))
            written.append(values)
        return self._batch(self._written(store, rows, written), errors, ok=201)

    def _batch_update(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        parsed_inputs = []
        seen: set[str] = set()
        for item in inputs:
            if not isinstance(item, dict) or "id" not in item:
                raise bad_request("Each input needs an id and properties")
            key = str(item["id"])
            if key in seen:
                raise bad_request(f"Duplicate IDs found in batch input: [{key}]", ids=[key])
            seen.add(key)
            parsed_inputs.append((item, self.portal.validate(store, item.get("properties") or {})))
        rows, written, errors, missing = [], [], [], []
        for item, parsed in parsed_inputs:
            key = str(item["id"])
            row = self._lookup(store, key, item.get("idProperty"))
            if row is None or store.archived[row]:
                missing.append(key)
                continue
            failure = self._failing(request, store.record_id(row), key)
            if failure is not None:
                errors.append(failure)
                continue
            self.portal.update(store, row, parsed)
            self.write_log.add(store.name, store.record_id(row))
            rows.append(row)
            written.append(item.get("properties") or {})
        if missing:
            errors.append(
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {store.singular.upper() or store.name} objects, they may"
                    " be deleted or not exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return self._batch(self._written(store, rows, written), errors)

    def _batch_upsert(self, request: Request, store: ObjectStore, inputs: list[Any]) -> Response:
        prepared = []
        for item in inputs:
            if not isinstance(item, dict) or "id" not in item:
                raise bad_request("Each input needs an id, an idProperty and properties")
            id_property = item.get("idProperty")
            pdef = store.properties.get(str(id_property)) if id_property else None
            if pdef is None or not pdef.unique:
                raise bad_request(
                    f"idProperty {id_property!r} is not a unique identifier property of"
                    f" {store.name}",
                    idProperty=[str(id_property)],
                )
            values = dict(item.get("properties") or {})
            values[pdef.name] = str(item["id"])
            prepared.append((item, pdef.name, values, self.portal.validate(store, values)))
        results, errors = [], []
        for item, id_property, values, parsed in prepared:
            row = self.portal.find_unique(store, id_property, str(item["id"]))
            failure = self._failing(
                request, store.record_id(row) if row is not None else None, str(item["id"])
            )
            if failure is not None:
                errors.append(failure)
                continue
            created = row is None
            if created:
                row = self._create(store, values)
            else:
                self.portal.update(store, row, parsed)
            assert row is not None
            self.write_log.add(store.name, store.record_id(row))
            record = self._written(store, [row], [values])[0]
            results.append({**record, "new": created})
        return self._batch(results, errors)
