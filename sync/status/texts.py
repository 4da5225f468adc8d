"""The status page's words, in English and French (``write.language``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Texts"]


@dataclass(frozen=True)
class Texts:
    title: str
    generated: str
    source: str
    last_success: str
    runs: str
    run: str
    started: str
    status_header: str
    duration: str
    pulled: str
    written: str
    calls: str
    failed: str
    excluded: str
    report: str
    no_runs: str
    calls_chart: str
    calls_title: str
    remaining: str
    budget_share: str
    attainment: str
    periods: str
    team: str
    subject: str
    attainment_short: str
    bookings: str
    quota: str
    pipeline: str
    coverage: str
    no_values: str
    endpoints: str
    cut: str
    unassigned: str
    colon: str
    thousands: str
    decimal: str
    percent_sign: str
    status: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, language: str) -> Texts:
        return FRENCH if language == "fr" else ENGLISH


ENGLISH = Texts(
    title="crm-kpi-worker status",
    generated="Page generated at {at}. Read-only.",
    source="Source",
    last_success="Last successful run",
    runs="Last runs",
    run="Run",
    started="Started",
    status_header="Outcome",
    duration="Duration",
    pulled="Records pulled",
    written="Records written",
    calls="API calls",
    failed="Failed writes",
    excluded="Excluded",
    report="report",
    no_runs="No run yet.",
    calls_chart="API calls per run (oldest on the left)",
    calls_title="run {run}: {calls} API calls ({started})",
    remaining="The CRM's remaining daily calls: {left} of {limit}",
    budget_share="the worker's share of the daily limit",
    attainment="Quota attainment, {period}",
    periods="Other quarters",
    team="Team",
    subject="Rep or team",
    attainment_short="Attainment",
    bookings="Bookings",
    quota="Quota",
    pipeline="Open pipeline",
    coverage="Pipeline coverage",
    no_values="No KPI values for a quarter yet.",
    endpoints="Also: /healthz, /readyz, /metrics (Prometheus).",
    cut="beyond the axis",
    unassigned="Unassigned",
    colon=": ",
    thousands=",",
    decimal=".",
    percent_sign="%",
    status={
        "completed": "completed",
        "completed_with_failures": "completed with failures",
        "interrupted": "interrupted",
        "failed": "failed",
        "running": "running",
    },
)

FRENCH = Texts(
    title="État de crm-kpi-worker",
    generated="Page générée le {at}. Lecture seule.",
    source="Source",
    last_success="Dernière exécution réussie",
    runs="Dernières exécutions",
    run="Exécution",
    started="Début",
    status_header="Résultat",
    duration="Durée",
    pulled="Enregistrements lus",
    written="Enregistrements écrits",
    calls="Appels d'API",
    failed="Écritures en échec",
    excluded="Exclus",
    report="rapport",
    no_runs="Aucune exécution pour l'instant.",
    calls_chart="Appels d'API par exécution (la plus ancienne à gauche)",
    calls_title="exécution {run} : {calls} appels d'API ({started})",
    remaining="Appels quotidiens restants dans le CRM : {left} sur {limit}",
    budget_share="part de la limite quotidienne accordée au worker",
    attainment="Atteinte du quota, {period}",
    periods="Autres trimestres",
    team="Équipe",
    subject="Commercial ou équipe",
    attainment_short="Atteinte",
    bookings="Signé",
    quota="Quota",
    pipeline="Pipeline ouvert",
    coverage="Couverture du pipeline",
    no_values="Aucune valeur de KPI trimestrielle pour l'instant.",
    endpoints="Aussi : /healthz, /readyz, /metrics (Prometheus).",
    cut="au-delà de l'axe",
    unassigned="Non attribué",
    colon="\u202f: ",
    thousands="\u202f",
    decimal=",",
    percent_sign="\u202f%",
    status={
        "completed": "terminée",
        "completed_with_failures": "terminée avec des échecs",
        "interrupted": "interrompue",
        "failed": "en échec",
        "running": "en cours",
    },
)
