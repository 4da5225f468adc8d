"""Check a config against the CRM it names, with the config's file:line:key in every answer.

Two checks, the same for every CRM:

- :func:`field_problems` (errors): every field the mapping names exists on its CRM object
  (Salesforce describe; HubSpot properties, and owners' fixed fields), every ``stages[].crm``
  value is a value of the stage field (Salesforce picklist values, HubSpot pipeline stage
  ids) and every ``pipelines`` id is a pipeline. ``setup`` and every ``sync`` run check this
  before pulling anything, so a wrong name stops them with its config line instead of a raw
  ``INVALID_FIELD`` query error mid-run.
- :func:`unmatched_emails` (warnings): every rep email of ``teams``, ``quotas.entries`` and
  ``variable_pay.targets`` is the email of a CRM user. An unmatched one does not stop a run
  (the CRM may gain the user later) but each run's report names it, with its line.

``crm-kpi config validate --check-crm`` runs both.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from crm_kpi_worker.connectors.base import CrmField
from crm_kpi_worker.connectors.registry import plugin_for
from crm_kpi_worker.sync.config import AppConfig
from crm_kpi_worker.sync.config_loader import ConfigProblem, PathElement, origin_of

__all__ = [
    "CrmCheckFailed",
    "config_emails",
    "field_problems",
    "require_known_fields",
    "unmatched_emails",
]

#: object name -> its fields by API name (None: the CRM has no such object).
Describe = Callable[[str], "dict[str, CrmField] | None"]

#: Emails of one company share their domain: only a near-identical one is a likely typo.
_EMAIL_CUTOFF = 0.85


class CrmCheckFailed(Exception):
    """The config names fields or values the CRM does not have; ``problems`` lists them."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} between the config and the CRM:"]
        lines += [str(p) for p in self.problems]
        super().__init__("\n".join(lines))


def _suggest(value: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=cutoff)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


def _find(fields: dict[str, CrmField], name: str) -> CrmField | None:
    """The field named ``name`` (API names are case-insensitive on Salesforce; HubSpot's
    are lower case, as the config requires)."""
    found = fields.get(name)
    if found is None:
        found = next((f for f in fields.values() if f.name.lower() == name.lower()), None)
    return found


class _Resolver:
    def __init__(self, describe: Describe, noun: str) -> None:
        self._describe = describe
        self._described: dict[str, dict[str, CrmField] | None] = {}
        self.noun = noun

    def describe(self, obj: str) -> dict[str, CrmField] | None:
        """Each object described once per check (one call each)."""
        if obj not in self._described:
            self._described[obj] = self._describe(obj)
        return self._described[obj]

    def field(
        self, obj: str, name: str, default: str | None = None
    ) -> tuple[CrmField | None, str | None]:
        """The field at ``name`` (a path follows relationships), or why there is none; the
        hint is the closest name, else ``default`` when the object has it."""
        fields = self.describe(obj)
        if fields is None:
            return None, f"the CRM has no object '{obj}'"
        head, _, rest = name.partition(".")
        if not rest:
            found = _find(fields, name)
            if found is None:
                hint = _suggest(name, fields)
                if not hint and default is not None and _find(fields, default) is not None:
                    hint = f"; did you mean '{default}'?"
                return None, f"{obj} has no {self.noun} '{name}'{hint}"
            return found, None
        relationships = {f.relationship: f for f in fields.values() if f.relationship}
        link = next((f for r, f in relationships.items() if r.lower() == head.lower()), None)
        if link is None:
            hint = _suggest(head, relationships)
            return None, f"{obj} has no relationship '{head}' (in '{name}'){hint}"
        why: str | None = f"{obj}.{head} leads to no object"
        for target in link.references:
            found, why = self.field(target, rest)
            if found is not None:
                return found, None
        return None, why


def _value_problems(
    config: AppConfig, index: int, mapping: Any, stage_field: CrmField, pipeline: CrmField | None
) -> Iterator[ConfigProblem]:
    origin = origin_of(config)
    base: tuple[PathElement, ...] = ("sources", index, "mapping")
    if stage_field.values is not None:
        for number, entry in enumerate(mapping.stages):
            if entry.crm not in stage_field.values:
                hint = _suggest(entry.crm, stage_field.values)
                yield origin.problem(
                    (*base, "stages", number, "crm"),
                    f"'{entry.crm}' is not a value of the CRM's stage field {stage_field.name}"
                    f" (its values: {', '.join(stage_field.values)}){hint}",
                )
    pipelines = getattr(mapping, "pipelines", None) or ()
    if pipeline is not None and pipeline.values is not None:
        for number, value in enumerate(pipelines):
            if value not in pipeline.values:
                yield origin.problem(
                    (*base, "pipelines", number),
                    f"'{value}' is not a pipeline id of the CRM (its pipelines:"
                    f" {', '.join(pipeline.values)}){_suggest(value, pipeline.values)}",
                )


def field_problems(config: AppConfig, index: int, describe: Describe) -> list[ConfigProblem]:
    """Every mapped field of ``config.sources[index]`` the CRM lacks, and every stage value
    (and HubSpot pipeline id) it does not know. ``describe`` is the source's connector's
    ``describe_fields``."""
    source = config.sources[index]
    origin = origin_of(config)
    plugin = plugin_for(source.type)
    resolver = _Resolver(describe, plugin.field_noun)
    base: tuple[PathElement, ...] = ("sources", index, "mapping")
    problems: list[ConfigProblem] = []
    found: dict[str, CrmField] = {}
    for mapped in plugin.mapped_fields(source.mapping, config.currency.conversion):
        field, why = resolver.field(mapped.object, mapped.name, mapped.default)
        if field is not None:
            found[str(mapped.key[-1])] = field
        elif not mapped.absent_ok:
            problems.append(origin.problem((*base, *mapped.key), str(why)))
    if "stage" in found:
        pipeline = found.get("pipeline")
        problems += _value_problems(config, index, source.mapping, found["stage"], pipeline)
    return sorted(problems)  # in file order


def config_emails(config: AppConfig) -> Iterator[tuple[tuple[PathElement, ...], str]]:
    """(key path, email) of every rep email the config names."""
    for team, emails in config.teams.items():
        for number, email in enumerate(emails):
            yield ("teams", team, number), email
    for number, entry in enumerate(config.quotas.entries):
        yield ("quotas", "entries", number, "rep"), entry.rep
    if config.variable_pay is not None:
        for email in config.variable_pay.targets:
            yield ("variable_pay", "targets", email), email


def unmatched_emails(
    config: AppConfig, source_name: str, user_emails: Iterable[str]
) -> list[ConfigProblem]:
    """A warning for each rep email of the config that no user of the source has."""
    known = {e.lower() for e in user_emails}
    origin = origin_of(config)
    problems = []
    for path, email in config_emails(config):
        if email.lower() in known:
            continue
        problems.append(
            origin.problem(
                path,
                f"no user of source '{source_name}' has the email '{email}'"
                f"{_suggest(email, known, _EMAIL_CUTOFF)} (until it matches a CRM user, this"
                " rep's team, quota and pay apply to no one and the rep's deals count as"
                " Unassigned)",
            )
        )
    return problems


def require_known_fields(config: AppConfig, source_name: str, describe: Describe) -> None:
    """Raise :class:`CrmCheckFailed` when :func:`field_problems` finds any for the source."""
    index = next(i for i, s in enumerate(config.sources) if s.name == source_name)
    problems = field_problems(config, index, describe)
    if problems:
        raise CrmCheckFailed(problems)


def user_emails(config: AppConfig, source_name: str, connector: Any) -> set[str]:
    """The emails of the source's users, read as a run reads them (the users stream)."""
    from crm_kpi_worker.sync import normalize as norm

    context = norm.NormalizeContext.for_source(config, source_name)
    emails: set[str] = set()
    for page in connector.pull("users", None):
        emails.update(rep.email for rep in norm.normalize(context, "users", page.records).reps)
    return emails


def check_against_crm(
    config: AppConfig, connect: Callable[[Any], Any]
) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(errors, warnings) of every source: unknown fields and values, unmatched emails.
    ``connect(source)`` logs in and returns the source's connector."""
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    for index, source in enumerate(config.sources):
        connector = connect(source)
        errors += field_problems(config, index, connector.describe_fields)
        warnings += unmatched_emails(
            config, source.name, user_emails(config, source.name, connector)
        )
    return errors, warnings
