"""The sandbox HubSpot's definitions around the records: owners, the deal pipeline and its
stages, properties and property groups, and custom object schemas."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from crm_kpi_worker.sandbox.hubspot.catalog import HS_STAGES, PIPELINE_ID, PIPELINE_LABEL
from crm_kpi_worker.sandbox.hubspot.formats import stamp
from crm_kpi_worker.sandbox.hubspot.portal import WriteError
from crm_kpi_worker.sandbox.hubspot.routes import (
    HubSpotError,
    PortalRoutes,
    _bool_arg,
    _inputs,
    _int_arg,
    _standard_error,
    bad_request,
    not_found,
)

MAX_OWNER_PAGE = 500


class MetadataRoutes(PortalRoutes):
    """Owners, pipelines, properties and schemas."""

    def on_owners(self, request: Request) -> Response:
        args = request.args
        limit = _int_arg(args.get("limit"), 100, "limit")
        if not 1 <= limit <= MAX_OWNER_PAGE:
            raise bad_request(f"limit must be between 1 and {MAX_OWNER_PAGE}", limit=[str(limit)])
        archived = _bool_arg(args.get("archived"))
        email = args.get("email")
        owners = [
            o
            for o in self.portal.owners
            if o.archived == archived and (email is None or o.email.lower() == email.lower())
        ]
        after = args.get("after")
        start = 0
        if after:
            after_id = _int_arg(after, 0, "after")
            start = next((i for i, o in enumerate(owners) if int(o.id) >= after_id), len(owners))
        page = owners[start : start + limit]
        body: dict[str, Any] = {"results": [o.to_json() for o in page]}
        if start + limit < len(owners):
            nxt = owners[start + limit].id
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return self._json(body)

    def on_owner(self, request: Request, owner_id: str) -> Response:
        id_property = request.args.get("idProperty", "id")
        archived = _bool_arg(request.args.get("archived"))
        for owner in self.portal.owners:
            key = str(owner.user_id) if id_property == "userId" else owner.id
            if key == owner_id and owner.archived == archived:
                return self._json(owner.to_json())
        raise not_found(f"Owner {owner_id} not found")

    def _pipeline_store(self, object_type: str) -> None:
        if self._store(object_type).name != "deals":
            raise not_found(f"No pipelines for object type {object_type}")

    def _stages(self) -> list[dict[str, Any]]:
        created = stamp(self.portal.setup_ms)
        return [
            {
                "id": stage_id,
                "label": label,
                "displayOrder": i,
                "metadata": {"probability": probability, "isClosed": "true" if closed else "false"},
                "createdAt": created,
                "updatedAt": created,
                "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            }
            for i, (stage_id, label, probability, closed) in enumerate(HS_STAGES.values())
        ]

    def _pipeline(self) -> dict[str, Any]:
        created = stamp(self.portal.setup_ms)
        return {
            "id": PIPELINE_ID,
            "label": PIPELINE_LABEL,
            "displayOrder": 0,
            "stages": self._stages(),
            "createdAt": created,
            "updatedAt": created,
            "archived": False,
        }

    def on_pipelines(self, request: Request, object_type: str) -> Response:
        self._pipeline_store(object_type)
        return self._json({"results": [self._pipeline()]})

    def on_pipeline(self, request: Request, object_type: str, pipeline_id: str) -> Response:
        self._pipeline_store(object_type)
        if pipeline_id != PIPELINE_ID:
            raise not_found(f"Pipeline {pipeline_id} not found")
        return self._json(self._pipeline())

    def on_stages(self, request: Request, object_type: str, pipeline_id: str) -> Response:
        self._pipeline_store(object_type)
        if pipeline_id != PIPELINE_ID:
            raise not_found(f"Pipeline {pipeline_id} not found")
        return self._json({"results": self._stages()})

    def on_stage(
        self, request: Request, object_type: str, pipeline_id: str, stage_id: str
    ) -> Response:
        self._pipeline_store(object_type)
        for stage in self._stages():
            if pipeline_id == PIPELINE_ID and stage["id"] == stage_id:
                return self._json(stage)
        raise not_found(f"Stage {stage_id} not found in pipeline {pipeline_id}")

    def on_properties(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            pdef = self.portal.create_property(store, self._body(request))
            return self._json(pdef.to_json(), 201)
        if _bool_arg(request.args.get("archived")):
            return self._json({"results": []})
        return self._json({"results": [p.to_json() for p in store.properties.values()]})

    def on_property(self, request: Request, object_type: str, property_name: str) -> Response:
        store = self._store(object_type)
        if request.method == "PATCH":
            updated = self.portal.update_property(store, property_name, self._body(request))
            return self._json(updated.to_json())
        pdef = store.properties.get(property_name)
        if pdef is None or _bool_arg(request.args.get("archived")):
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property {property_name} for object type {store.type_id}",
                context={"propertyName": [property_name]},
            )
        return self._json(pdef.to_json())

    def on_properties_create(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        inputs = _inputs(self._body(request))
        results, errors = [], []
        for item in inputs:
            try:
                results.append(self.portal.create_property(store, item).to_json())
            except WriteError as exc:
                if exc.status != 409:
                    raise
                errors.append(_standard_error(exc.category, exc.message, exc.context or {}))
        return self._batch(results, errors, ok=201)

    def on_properties_read(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        body = self._body(request)
        inputs = _inputs(body)
        results, missing = [], []
        for item in inputs:
            name = str(item.get("name")) if isinstance(item, dict) else str(item)
            pdef = store.properties.get(name)
            if pdef is None or body.get("archived"):
                missing.append(name)
            else:
                results.append(pdef.to_json())
        errors = (
            [
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Unable to find properties {', '.join(missing)} for {store.type_id}",
                    {"names": missing},
                )
            ]
            if missing
            else []
        )
        return self._batch(results, errors)

    def on_groups(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if request.method == "POST":
            return self._json(self.portal.create_group(store, self._body(request)).to_json(), 201)
        return self._json({"results": [g.to_json() for g in store.groups.values()]})

    def on_group(self, request: Request, object_type: str, group_name: str) -> Response:
        store = self._store(object_type)
        if request.method == "PATCH":
            group_def = self.portal.update_group(store, group_name, self._body(request))
            return self._json(group_def.to_json())
        group = store.groups.get(group_name)
        if group is None:
            raise not_found(f"Unable to find property group {group_name} for {store.type_id}")
        return self._json(group.to_json())

    def on_schemas(self, request: Request) -> Response:
        if request.method == "POST":
            store = self.portal.create_schema(self._body(request))
            return self._json(self.portal.schema_json(store), 201)
        if _bool_arg(request.args.get("archived")):
            return self._json({"results": []})
        return self._json(
            {"results": [self.portal.schema_json(s) for s in self.portal.custom_stores()]}
        )

    def on_schema(self, request: Request, object_type: str) -> Response:
        store = self._store(object_type)
        if not store.custom:
            raise not_found(f"No custom object schema {object_type}")
        if request.method == "PATCH":
            return self._json(self.portal.update_schema(store, self._body(request)))
        return self._json(self.portal.schema_json(store))
