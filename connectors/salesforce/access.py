"""Who may read and write the KPI fields: two permission sets ``setup`` keeps in the org.

Fields created through the Tooling API get no field-level security: nobody but the API sees
them. ``setup`` therefore keeps two permission sets, which it creates and owns:

- ``KPI_Worker_Read``: Read on the scorecard object and on every field the config writes
  (Opportunity, User and scorecard fields), assigned to every active rep (see
  :data:`REP_RULE`) and every active user of ``write.grant_to.profiles``;
- ``KPI_Worker_Write``: Read and Edit on those fields, Read, Create and Edit on the scorecard
  object, assigned to the integration user (the user the worker logs in as).

Everything goes through REST (``sobjects/PermissionSet``, ``composite/sobjects`` in batches
of 200), planned from SOQL reads of what exists, so only differences are planned: a missing
permission set, missing ObjectPermissions/FieldPermissions, flags to raise, missing
assignments. Nothing else changes: profiles are never touched, flags are never lowered,
records the worker did not make are never deleted, and a user who stopped being a rep keeps
the assignment (a re-run adds, it never removes: removing is an admin's decision).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_kpi_worker.connectors.base import SetupChange, SetupSettings, TargetField
from crm_kpi_worker.connectors.errors import RequestRejected, codes_of
from crm_kpi_worker.connectors.salesforce import soql
from crm_kpi_worker.connectors.salesforce.settings import COLLECTION_BATCH_SIZE

__all__ = [
    "READ_SET",
    "REP_RULE",
    "WRITE_SET",
    "AccessPlanner",
    "PermissionSetIds",
]

log = logging.getLogger(__name__)

READ_SET = "KPI_Worker_Read"
WRITE_SET = "KPI_Worker_Write"
#: How many usernames a change's one line names before "and N more".
NAMED_USERS = 3

#: Who is a rep, for ``write.grant_to.reps``: one SOQL query.
REP_RULE = (
    "an active user (IsActive) who owns at least one opportunity (any stage or date: the"
    " worker reads them all)"
)

_LABELS = {
    "en": {
        READ_SET: ("KPI Worker: read KPIs", "read access to the KPI fields and scorecards"),
        WRITE_SET: ("KPI Worker: write KPIs", "the worker's own access to write the KPI fields"),
    },
    "fr": {
        READ_SET: ("KPI Worker : lecture des KPI", "lecture des champs KPI et des tableaux"),
        WRITE_SET: (
            "KPI Worker : écriture des KPI",
            "l'accès du worker pour écrire les champs KPI",
        ),
    },
}

_MANAGED = {
    "en": "Managed by crm-kpi-worker (crm-kpi setup), which re-applies it: {what}.",
    "fr": "Géré par crm-kpi-worker (crm-kpi setup), qui le réapplique : {what}.",
}

_OBJECT_FLAGS = {
    READ_SET: ("PermissionsRead",),
    WRITE_SET: ("PermissionsRead", "PermissionsCreate", "PermissionsEdit"),
}
_FIELD_FLAGS = {READ_SET: ("PermissionsRead",), WRITE_SET: ("PermissionsRead", "PermissionsEdit")}
_FLAG_WORDS = {"PermissionsRead": "read", "PermissionsCreate": "create", "PermissionsEdit": "edit"}

Fetch = Callable[[Callable[[], Any]], Any]


@dataclass
class PermissionSetIds:
    """The two permission sets' ids: known at plan time when they exist, else set by the
    change that creates them (changes after it read them when applied)."""

    ids: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


@dataclass(frozen=True)
class _Existing:
    """What the org holds of the two permission sets (one SOQL read each kind)."""

    sets: dict[str, dict[str, Any]]  # name -> PermissionSet record
    objects: dict[tuple[str, str], dict[str, Any]]  # (set name, object lower) -> record
    fields: dict[tuple[str, str], dict[str, Any]]  # (set name, Object.Field lower) -> record
    assignees: dict[str, set[str]]  # set name -> assignee ids


class AccessPlanner:
    """Plans the permission set changes (see module doc); :meth:`plan` only reads."""

    def __init__(self, client: Any, fetch: Fetch, username: str | None = None) -> None:
        self.client = client
        self.fetch = fetch
        #: The integration user's username, when the auth method names one.
        self.username = username
        self.ids = PermissionSetIds()

    # ---- reads ------------------------------------------------------------------------------

    def _query(
        self, sobject: str, fields: Sequence[str], *where: str, order_by: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        text = soql.Select(sobject, fields, where=where, order_by=order_by).soql()
        answer = self.fetch(lambda: self.client.query_all(text))
        records = answer.get("records") if isinstance(answer, dict) else None
        return [r for r in records or () if isinstance(r, dict)]

    def _existing(self) -> _Existing:
        names = soql.in_list((READ_SET, WRITE_SET))
        sets = {
            str(r["Name"]): r
            for r in self._query(
                "PermissionSet", ("Id", "Name", "Label", "Description"), f"Name IN {names}"
            )
        }
        self.ids.ids.update({name: str(r["Id"]) for name, r in sets.items()})
        by_id = {str(r["Id"]): name for name, r in sets.items()}
        if not by_id:
            return _Existing(sets, {}, {}, {})
        parents = soql.in_list(by_id)
        objects = {
            (by_id[str(r["ParentId"])], str(r["SobjectType"]).lower()): r
            for r in self._query(
                "ObjectPermissions",
                ("Id", "ParentId", "SobjectType", *_OBJECT_FLAGS[WRITE_SET]),
                f"ParentId IN {parents}",
            )
        }
        fields = {
            (by_id[str(r["ParentId"])], str(r["Field"]).lower()): r
            for r in self._query(
                "FieldPermissions",
                ("Id", "ParentId", "SobjectType", "Field", *_FIELD_FLAGS[WRITE_SET]),
                f"ParentId IN {parents}",
            )
        }
        assignees: dict[str, set[str]] = {name: set() for name in sets}
        for r in self._query(
            "PermissionSetAssignment",
            ("AssigneeId", "PermissionSetId"),
            f"PermissionSetId IN {parents}",
        ):
            assignees[by_id[str(r["PermissionSetId"])]].add(str(r["AssigneeId"]))
        return _Existing(sets, objects, fields, assignees)

    def readers(self, settings: SetupSettings) -> dict[str, str]:
        """Active users who get read access (id -> username): reps, then profiles' users."""
        users: dict[str, str] = {}
        if settings.grant_to_reps:
            users.update(
                self._users("Id IN (SELECT OwnerId FROM Opportunity WHERE OwnerId != null)")
            )
        if settings.grant_to_profiles:
            names = soql.in_list(settings.grant_to_profiles)
            found = {str(r["Name"]) for r in self._query("Profile", ("Name",), f"Name IN {names}")}
            unknown = [p for p in settings.grant_to_profiles if p not in found]
            if unknown:
                raise ValueError(
                    f"write.grant_to.profiles names profiles this org does not have:"
                    f" {', '.join(unknown)} (profile names as Setup > Profiles shows them)"
                )
            users.update(self._users(f"Profile.Name IN {names}"))
        return users

    def _users(self, condition: str) -> dict[str, str]:
        records = self._query(
            "User", ("Id", "Username"), "IsActive = true", condition, order_by=("Username",)
        )
        return {str(r["Id"]): str(r.get("Username") or r["Id"]) for r in records}

    def integration_user(self) -> tuple[str, str]:
        """(id, username) of the user the worker is logged in as. By username when the auth
        method names one (password, oauth_password, jwt: one SOQL query); else (client
        credentials, session id) ``chatter/users/me``, and OAuth's ``userinfo`` when Chatter
        is off: both answer for the session's user whatever the login flow."""
        if self.username is not None:
            found = self._query(
                "User", ("Id", "Username"), f"Username = {soql.string_literal(self.username)}"
            )
            if found:
                return str(found[0]["Id"]), str(found[0].get("Username") or self.username)
        try:
            me = self.fetch(lambda: self.client.restful("chatter/users/me"))
            return str(me["id"]), str(me.get("username") or me["id"])
        except (RequestRejected, KeyError, TypeError):
            info = self.fetch(lambda: self.client.oauth2("userinfo"))
            return str(info["user_id"]), str(info.get("preferred_username") or info["user_id"])

    # ---- the plan ---------------------------------------------------------------------------

    def plan(
        self, target_objects: Sequence[str], fields: Sequence[TargetField], settings: SetupSettings
    ) -> list[SetupChange]:
        existing = self._existing()
        wanted_fields = [(soql.api_name(f.object, "object"), soql.api_name(f.name)) for f in fields]
        readers = self.readers(settings)
        me_id, me_name = self.integration_user()
        changes: list[SetupChange] = []
        for name, assignees in ((READ_SET, readers), (WRITE_SET, {me_id: me_name})):
            changes += self._plan_set(
                name, existing, target_objects, wanted_fields, assignees, settings.language
            )
        return changes

    def _plan_set(
        self,
        name: str,
        existing: _Existing,
        target_objects: Sequence[str],
        fields: Sequence[tuple[str, str]],
        assignees: Mapping[str, str],
        language: str,
    ) -> list[SetupChange]:
        changes = []
        label, what = _LABELS.get(language, _LABELS["en"])[name]
        description = _MANAGED.get(language, _MANAGED["en"]).format(what=what)
        record = existing.sets.get(name)
        if record is None:
            changes.append(
                SetupChange(
                    "permission set",
                    name,
                    f'create "{label}"',
                    lambda: self._create_set(name, label, description),
                )
            )
        elif record.get("Label") != label or record.get("Description") != description:
            set_id = str(record["Id"])
            changes.append(
                SetupChange(
                    "permission set",
                    name,
                    f'set label "{label}" and description',
                    lambda: self._patch(
                        f"sobjects/PermissionSet/{set_id}",
                        {"Label": label, "Description": description},
                    ),
                )
            )
        changes += self._plan_objects(name, existing, target_objects)
        changes += self._plan_fields(name, existing, fields)
        missing = [
            (uid, user)
            for uid, user in assignees.items()
            if uid not in existing.assignees.get(name, set())
        ]
        if missing:
            changes.append(
                SetupChange(
                    "permission set",
                    name,
                    f"assign to {_users_line(missing)}",
                    lambda: self._assign(name, [uid for uid, _ in missing]),
                )
            )
        return changes

    def _plan_objects(
        self, name: str, existing: _Existing, target_objects: Sequence[str]
    ) -> list[SetupChange]:
        flags = _OBJECT_FLAGS[name]
        changes = []
        for obj in target_objects:
            record = existing.objects.get((name, obj.lower()))
            lacking = [f for f in flags if not (record or {}).get(f)]
            if not lacking:
                continue
            words = ", ".join(_FLAG_WORDS[f] for f in lacking)
            body = {f: True for f in flags}
            apply = self._records_call(
                "POST" if record is None else "PATCH",
                functools.partial(self._object_permission, name, obj, record, body),
            )
            changes.append(
                SetupChange("permission set", name, f"grant {words} on object {obj}", apply)
            )
        return changes

    def _plan_fields(
        self, name: str, existing: _Existing, fields: Sequence[tuple[str, str]]
    ) -> list[SetupChange]:
        flags = _FIELD_FLAGS[name]
        body = {f: True for f in flags}
        new: list[tuple[str, str]] = []
        raise_ids: list[str] = []
        per_object: Counter[str] = Counter()
        for obj, fld in fields:
            record = existing.fields.get((name, f"{obj}.{fld}".lower()))
            if record is not None and all(record.get(f) for f in flags):
                continue
            per_object[obj] += 1
            if record is None:
                new.append((obj, fld))
            else:
                raise_ids.append(str(record["Id"]))
        if not per_object:
            return []
        words = " and ".join(_FLAG_WORDS[f] for f in flags)
        counts = ", ".join(f"{obj} {n}" for obj, n in per_object.items())

        def records() -> list[dict[str, Any]]:
            created = [
                {
                    "attributes": {"type": "FieldPermissions"},
                    "ParentId": self.ids[name],
                    "SobjectType": obj,
                    "Field": f"{obj}.{fld}",
                    **body,
                }
                for obj, fld in new
            ]
            return created

        def apply() -> None:
            if new:
                self._records_call("POST", records)()
            if raise_ids:
                self._records_call(
                    "PATCH",
                    lambda: [
                        {"attributes": {"type": "FieldPermissions"}, "Id": rid, **body}
                        for rid in raise_ids
                    ],
                )()

        total = sum(per_object.values())
        detail = f"grant {words} on {total} fields ({counts})"
        return [SetupChange("permission set", name, detail, apply)]

    # ---- writes (the changes' apply) --------------------------------------------------------

    def _object_permission(
        self, name: str, obj: str, record: dict[str, Any] | None, body: dict[str, bool]
    ) -> list[dict[str, Any]]:
        """The ObjectPermissions record to create (no ``record``) or to raise flags on."""
        head: dict[str, Any] = {"attributes": {"type": "ObjectPermissions"}}
        if record is None:
            return [{**head, "ParentId": self.ids[name], "SobjectType": obj, **body}]
        return [{**head, "Id": str(record["Id"]), **body}]

    def _create_set(self, name: str, label: str, description: str) -> None:
        answer = self.fetch(
            lambda: self.client.restful(
                "sobjects/PermissionSet",
                method="POST",
                json={"Name": name, "Label": label, "Description": description},
            )
        )
        self.ids.ids[name] = str(answer["id"])
        log.info("created permission set %s", name)

    def _patch(self, path: str, body: dict[str, Any]) -> None:
        self.fetch(lambda: self.client.restful(path, method="PATCH", json=body))

    def _assign(self, name: str, user_ids: Iterable[str]) -> None:
        records = [
            {
                "attributes": {"type": "PermissionSetAssignment"},
                "PermissionSetId": self.ids[name],
                "AssigneeId": uid,
            }
            for uid in user_ids
        ]
        self._records_call("POST", lambda: records, tolerate=("DUPLICATE_VALUE",))()

    def _records_call(
        self,
        method: str,
        records: Callable[[], list[dict[str, Any]]],
        tolerate: tuple[str, ...] = (),
    ) -> Callable[[], None]:
        """A change's apply: ``records()`` (built when applied, once earlier changes made the
        ids they name) sent to ``composite/sobjects`` 200 at a time; any refused record stops
        setup with Salesforce's reason (``tolerate``: codes meaning "already so")."""

        def apply() -> None:
            batch = records()
            for start in range(0, len(batch), COLLECTION_BATCH_SIZE):
                chunk = batch[start : start + COLLECTION_BATCH_SIZE]
                answer = self.fetch(
                    functools.partial(
                        self.client.restful,
                        "composite/sobjects",
                        method=method,
                        json={"allOrNone": False, "records": chunk},
                    )
                )
                _check_results(chunk, answer, tolerate)

        return apply


def _check_results(
    chunk: Sequence[Mapping[str, Any]], answer: Any, tolerate: tuple[str, ...]
) -> None:
    results = answer if isinstance(answer, list) else []
    problems = []
    for record, result in zip(chunk, results, strict=False):
        if isinstance(result, dict) and result.get("success") is True:
            continue
        code, message = codes_of(
            (result or {}).get("errors") or [] if isinstance(result, dict) else []
        )
        if code in tolerate:
            continue
        what = (
            record.get("Field")
            or record.get("SobjectType")
            or record.get("AssigneeId")
            or record.get("Id")
        )
        problems.append(f"{record['attributes']['type']} {what}: {code} {message}")
    if len(results) != len(chunk):
        problems.append("Salesforce did not answer one result per record")
    if problems:
        raise RequestRejected(
            "Salesforce refused setup's access changes: " + "; ".join(problems[:5])
        )


def _users_line(users: Sequence[tuple[str, str]]) -> str:
    names = [name for _, name in users]
    shown = ", ".join(names[:NAMED_USERS])
    more = f" and {len(names) - NAMED_USERS} more" if len(names) > NAMED_USERS else ""
    noun = "user" if len(names) == 1 else "users"
    return f"{len(names)} {noun} ({shown}{more})"
