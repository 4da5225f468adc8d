# ruff: noqa: E501 - the labels and help texts below are prose, kept one per line.
"""What the worker writes into the CRM: the objects and fields named by the config's
``kpi_fields``, with their types, labels and help texts (English or French).

``setup`` creates what is missing from these definitions; the writer formats values for them
(ratios go to percent fields as percentages: 1.25 is written 125).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crm_kpi_worker.connectors.base import TargetField, TargetObject
from crm_kpi_worker.connectors.registry import plugin_for
from crm_kpi_worker.sync.config import KpiFields

Language = Literal["en", "fr"]
FieldKind = Literal["currency", "percent", "count", "days", "ratio", "date", "datetime", "text"]


@dataclass(frozen=True)
class KpiSpec:
    kind: FieldKind
    en: tuple[str, str]  # label, help text
    fr: tuple[str, str]


KPI_SPECS: dict[str, KpiSpec] = {
    "bookings_arr": KpiSpec(
        "currency",
        ("Bookings (ARR)", "ARR of won, quota-credited deals closed in the period."),
        (
            "Prises de commande (ARR)",
            "ARR des affaires gagnées comptant pour le quota, closes dans la période.",
        ),
    ),
    "bookings_mrr": KpiSpec(
        "currency",
        ("Bookings (MRR)", "Bookings ARR divided by 12."),
        ("Prises de commande (MRR)", "ARR des prises de commande divisé par 12."),
    ),
    "deals_won": KpiSpec(
        "count",
        ("Deals won", "Won deals with a close date in the period."),
        ("Affaires gagnées", "Affaires gagnées dont la date de clôture est dans la période."),
    ),
    "deals_lost": KpiSpec(
        "count",
        ("Deals lost", "Lost deals with a close date in the period."),
        ("Affaires perdues", "Affaires perdues dont la date de clôture est dans la période."),
    ),
    "win_rate": KpiSpec(
        "percent",
        ("Win rate", "Won / (won + lost) over deals closed in the period."),
        (
            "Taux de réussite",
            "Gagnées / (gagnées + perdues) sur les affaires closes de la période.",
        ),
    ),
    "avg_deal_size": KpiSpec(
        "currency",
        ("Average deal size", "Bookings ARR / number of quota-credited won deals."),
        (
            "Taille moyenne des affaires",
            "ARR des prises de commande / nombre d'affaires gagnées comptant pour le quota.",
        ),
    ),
    "sales_cycle_days": KpiSpec(
        "days",
        ("Sales cycle (days)", "Mean days from creation (or cycle start) to close, won deals."),
        (
            "Cycle de vente (jours)",
            "Nombre moyen de jours de la création (ou du début de cycle) à la clôture, affaires gagnées.",
        ),
    ),
    "sales_cycle_days_median": KpiSpec(
        "days",
        ("Sales cycle, median (days)", "Median days from creation (or cycle start) to close."),
        (
            "Cycle de vente médian (jours)",
            "Nombre médian de jours de la création (ou du début de cycle) à la clôture.",
        ),
    ),
    "quota": KpiSpec(
        "currency",
        ("Quota", "The rep's quota for the period."),
        ("Quota", "Le quota du commercial pour la période."),
    ),
    "quota_attainment": KpiSpec(
        "percent",
        ("Quota attainment", "Bookings ARR / quota (125% = 1.25 x quota)."),
        ("Atteinte du quota", "ARR des prises de commande / quota (125 % = 1,25 x le quota)."),
    ),
    "quota_remaining": KpiSpec(
        "currency",
        ("Quota remaining", "Quota minus bookings, never below 0."),
        ("Reste à faire", "Quota moins les prises de commande, jamais négatif."),
    ),
    "open_pipeline_arr": KpiSpec(
        "currency",
        (
            "Open pipeline (ARR)",
            "ARR of open deals closing in the period (overdue ones in the current period).",
        ),
        (
            "Pipeline ouvert (ARR)",
            "ARR des affaires ouvertes dont la clôture est dans la période (les retards comptent dans la période en cours).",
        ),
    ),
    "weighted_pipeline_arr": KpiSpec(
        "currency",
        ("Weighted pipeline (ARR)", "Open pipeline, each deal times its stage probability."),
        (
            "Pipeline pondéré (ARR)",
            "Pipeline ouvert, chaque affaire multipliée par la probabilité de son étape.",
        ),
    ),
    "pipeline_coverage": KpiSpec(
        "ratio",
        ("Pipeline coverage", "Open pipeline / quota remaining (3 = three times the gap)."),
        ("Couverture du pipeline", "Pipeline ouvert / reste à faire (3 = trois fois l'écart)."),
    ),
    "forecast_commit_arr": KpiSpec(
        "currency",
        ("Forecast, commit (ARR)", "Bookings plus open Commit deals closing in the period."),
        (
            "Prévision engagée (ARR)",
            "Prises de commande plus les affaires ouvertes « Commit » de la période.",
        ),
    ),
    "forecast_best_case_arr": KpiSpec(
        "currency",
        (
            "Forecast, best case (ARR)",
            "Commit forecast plus open Best Case deals closing in the period.",
        ),
        (
            "Prévision haute (ARR)",
            "Prévision engagée plus les affaires ouvertes « Best Case » de la période.",
        ),
    ),
    "conversion_rate": KpiSpec(
        "percent",
        (
            "Demo conversion",
            "Of deals that entered the demo stage in the period and are closed, the share won.",
        ),
        (
            "Conversion des démos",
            "Part des affaires entrées en démo dans la période, et closes, qui sont gagnées.",
        ),
    ),
    "demos_per_week": KpiSpec(
        "days",
        ("Demos per week", "Demo activities in the period / elapsed weeks."),
        ("Démos par semaine", "Démos de la période / semaines écoulées."),
    ),
    "pipeline_velocity_per_day": KpiSpec(
        "currency",
        (
            "Pipeline velocity (per day)",
            "Open qualified deals x win rate x average deal size / cycle days (trailing window).",
        ),
        (
            "Vélocité du pipeline (par jour)",
            "Affaires qualifiées ouvertes x taux de réussite x taille moyenne / durée du cycle (fenêtre glissante).",
        ),
    ),
    "retention_90d": KpiSpec(
        "percent",
        (
            "90-day retention",
            "Customers won in the period, 90+ days ago, not churned within 90 days.",
        ),
        (
            "Rétention à 90 jours",
            "Clients gagnés dans la période, il y a 90 jours ou plus, non perdus dans les 90 jours.",
        ),
    ),
    "forecast_accuracy": KpiSpec(
        "percent",
        (
            "Forecast accuracy",
            "1 - |commit at snapshot - final bookings| / final bookings, floored at 0.",
        ),
        (
            "Précision de la prévision",
            "1 - |prévision engagée au relevé - prises de commande finales| / prises de commande finales, au moins 0.",
        ),
    ),
    "variable_pay_estimate": KpiSpec(
        "currency",
        ("Variable pay estimate", "Variable target x payout curve at the current attainment."),
        (
            "Estimation de la variable",
            "Objectif de variable x courbe de paiement à l'atteinte actuelle.",
        ),
    ),
    "deal_age_days": KpiSpec(
        "days",
        ("Deal age (days)", "Days from creation to close (closed) or to today (open)."),
        (
            "Âge de l'affaire (jours)",
            "Jours de la création à la clôture (close) ou à aujourd'hui (ouverte).",
        ),
    ),
    "days_in_stage": KpiSpec(
        "days",
        ("Days in stage", "Days since the deal entered its current stage."),
        ("Jours dans l'étape", "Jours depuis l'entrée de l'affaire dans son étape actuelle."),
    ),
    "close_date_slips": KpiSpec(
        "count",
        ("Close date slips", "How many times the close date was moved later."),
        ("Reports de clôture", "Nombre de fois où la date de clôture a été repoussée."),
    ),
    "owner_quota_attainment": KpiSpec(
        "percent",
        ("Owner quota attainment", "The owner's quota attainment in the current period."),
        (
            "Atteinte du quota du propriétaire",
            "L'atteinte du quota du propriétaire sur la période en cours.",
        ),
    ),
}

# Ages written as the date they count from (see DealTarget.daily_ages).
AGE_ANCHORS: dict[str, KpiSpec] = {
    "deal_age_days": KpiSpec(
        "date",
        ("Deal created on", "Day the deal was created. Age in days: formula TODAY() - this field."),
        (
            "Affaire créée le",
            "Jour de création de l'affaire. Âge en jours : formule AUJOURDHUI() - ce champ.",
        ),
    ),
    "days_in_stage": KpiSpec(
        "date",
        (
            "Stage entered on",
            "Day the deal entered its current stage. Days in stage: formula TODAY() - this field.",
        ),
        (
            "Étape commencée le",
            "Jour d'entrée dans l'étape actuelle. Jours dans l'étape : formule AUJOURDHUI() - ce champ.",
        ),
    ),
}

_DIMENSIONS: dict[str, tuple[FieldKind, tuple[str, str], tuple[str, str]]] = {
    "rep_field": (
        "text",
        ("Rep", "The Account Executive (empty for team and org rows)."),
        ("Commercial", "Le commercial (vide pour les lignes équipe et organisation)."),
    ),
    "team_field": (
        "text",
        ("Team", "The rep's team, or the team this row sums."),
        ("Équipe", "L'équipe du commercial, ou l'équipe que la ligne agrège."),
    ),
    "period_type_field": (
        "text",
        ("Period type", "month, quarter or year."),
        ("Type de période", "mois, trimestre ou année (month, quarter, year)."),
    ),
    "period_start_field": (
        "date",
        ("Period start", "First day of the period."),
        ("Début de période", "Premier jour de la période."),
    ),
    "period_end_field": (
        "date",
        ("Period end", "Last day of the period."),
        ("Fin de période", "Dernier jour de la période."),
    ),
    "computed_at_field": (
        "datetime",
        ("Computed at", "When the worker computed these values."),
        ("Calculé le", "Quand le worker a calculé ces valeurs."),
    ),
}

_SCORECARD_OBJECT = {
    "en": ("KPI Scorecard", "KPI Scorecards", "Scorecard"),
    "fr": ("Tableau de bord KPI", "Tableaux de bord KPI", "Tableau de bord"),
}
_KEY_LABEL = {
    "en": ("Scorecard key", "Source, subject and period: the key the worker upserts by."),
    "fr": ("Clé du tableau de bord", "Source, sujet et période : la clé d'upsert du worker."),
}


#: The KPIs a scorecard shows first (``TargetObject.headline_fields``), most useful first:
#: where the rep stands against quota, what was booked, how well deals close. Configured KPIs
#: outside this list follow in the config's order, up to ``HEADLINE_COUNT`` in all.
HEADLINE_KPIS = ("quota_attainment", "bookings_arr", "win_rate", "open_pipeline_arr")
HEADLINE_COUNT = 3


def headline_fields(kpi_fields: dict[str, str]) -> tuple[str, ...]:
    """The scorecard fields shown first: of ``kpi_fields`` (KPI key -> field name, the
    config's order), those of :data:`HEADLINE_KPIS` first, then the others."""
    ordered = [k for k in HEADLINE_KPIS if k in kpi_fields]
    ordered += [k for k in kpi_fields if k not in ordered]
    return tuple(kpi_fields[k] for k in ordered[:HEADLINE_COUNT])


#: The words the worker writes into scorecard records themselves (their display names), per
#: ``write.language``; field labels and help texts are in the tables above.
_SCORECARD_WORDS: dict[Language, dict[str, str]] = {
    "en": {"unassigned": "Unassigned", "org": "Org", "quarter": "Q", "year": "FY"},
    "fr": {
        "unassigned": "Non attribué",
        "org": "Organisation",
        "quarter": "T",
        "year": "Exercice ",
    },
}
SCORECARD_NAME_LENGTH = 80  # Salesforce's Name field; HubSpot's kpi_name is created as long


def subject_name(scope: str, name: str, language: Language, *, unassigned: bool = False) -> str:
    """How a scorecard names its subject, in the config's language: the whole org, the
    unassigned pseudo-rep, else ``name`` (the rep's name, the team)."""
    words = _SCORECARD_WORDS[language]
    if scope == "org":
        return words["org"]
    return words["unassigned"] if unassigned else name


def period_name(period_key: str, language: Language) -> str:
    """A period key as people read it: ``2026-Q3``/``FY2026`` in English, ``2026-T3``/
    ``Exercice 2026`` in French (months, ``2026-07``, read the same in both)."""
    words = _SCORECARD_WORDS[language]
    if period_key.startswith("FY"):
        return f"{words['year']}{period_key[2:]}"
    year, dash, part = period_key.partition("-Q")
    return f"{year}-{words['quarter']}{part}" if dash else period_key


def scorecard_name(subject: str, period_key: str, language: Language) -> str:
    """A scorecard record's display name (Salesforce ``Name``, HubSpot ``kpi_name``)."""
    return f"{subject} - {period_name(period_key, language)}"[:SCORECARD_NAME_LENGTH]


def _field(
    obj: str, name: str, kind: FieldKind, text: tuple[str, str], **extra: object
) -> TargetField:
    label, help_text = text
    kwargs: dict[str, object] = {"type": "number", "precision": 18, "scale": 2}
    if kind == "currency":
        kwargs = {"type": "currency", "precision": 18, "scale": 2}
    elif kind == "percent":
        kwargs = {"type": "percent", "precision": 8, "scale": 2}
    elif kind == "count":
        kwargs = {"type": "number", "precision": 10, "scale": 0}
    elif kind == "days":
        kwargs = {"type": "number", "precision": 10, "scale": 1}
    elif kind == "ratio":
        kwargs = {"type": "number", "precision": 10, "scale": 2}
    elif kind in {"date", "datetime", "text"}:
        kwargs = {"type": kind, "length": 255}
    kwargs.update(extra)
    return TargetField(object=obj, name=name, label=label[:40], help_text=help_text, **kwargs)  # type: ignore[arg-type]


def kpi_kind(key: str, *, as_date: bool = False) -> FieldKind:
    """How a KPI's value is written (as_date: an age written as its anchor date)."""
    return AGE_ANCHORS[key].kind if as_date and key in AGE_ANCHORS else KPI_SPECS[key].kind


def ages_as_dates(fields: KpiFields) -> bool:
    return fields.deal is not None and not fields.deal.daily_ages


def targets(
    fields: KpiFields,
    crm: str,
    language: Language,
    *,
    deal_object: str | None = None,
    rep_object: str | None = None,
) -> tuple[list[TargetObject], list[TargetField]]:
    """Every object and field the config's kpi_fields writes, as setup must create them
    (the objects by default those of ``crm``'s registry entry)."""
    plugin = plugin_for(crm)
    deal_object = deal_object or plugin.deal_object
    rep_object = rep_object or plugin.rep_object or "User"
    objects: list[TargetObject] = []
    out: list[TargetField] = []
    if fields.scorecard is not None:
        card = fields.scorecard
        label, plural, name_label = _SCORECARD_OBJECT[language]
        objects.append(
            TargetObject(card.object, label, plural, name_label, headline_fields(dict(card.fields)))
        )
        key_label = _KEY_LABEL[language]
        if plugin.scorecard_name_field is not None:
            # The object has no name field of its own: the scorecard's display name.
            out.append(_field(card.object, plugin.scorecard_name_field, "text", (name_label, "")))
        out.append(
            _field(card.object, card.external_id, "text", key_label, external_id=True, unique=True)
        )
        for column, name in card.columns(crm).items():
            kind, en, fr = _DIMENSIONS[column]
            text = en if language == "en" else fr
            if column == "rep_field" and plugin.rep_column_is_lookup:
                # A lookup to the rep's User record, so reports can join on it.
                out.append(
                    _field(card.object, name, "text", text, type="lookup", reference_to=rep_object)
                )
            else:
                out.append(_field(card.object, name, kind, text))
        for key, name in card.fields.items():
            spec = KPI_SPECS[key]
            out.append(_field(card.object, name, spec.kind, getattr(spec, language)))
    if fields.deal is not None:
        as_dates = not fields.deal.daily_ages
        for key, name in fields.deal.fields.items():
            spec = AGE_ANCHORS[key] if as_dates and key in AGE_ANCHORS else KPI_SPECS[key]
            out.append(_field(deal_object, name, spec.kind, getattr(spec, language)))
    if fields.owner is not None:
        for key, name in fields.owner.fields.items():
            spec = KPI_SPECS[key]
            label, help_text = getattr(spec, language)
            prefix = "Owner: " if language == "en" else "Commercial : "
            out.append(_field(deal_object, name, spec.kind, (prefix + label, help_text)))
    if fields.rep is not None:
        for key, name in fields.rep.fields.items():
            spec = KPI_SPECS[key]
            out.append(_field(rep_object, name, spec.kind, getattr(spec, language)))
    return objects, out
