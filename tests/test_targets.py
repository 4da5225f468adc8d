"""The fields setup creates: names from the config, types, labels in English and French."""

from __future__ import annotations

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sync.config_loader import load_config
from crm_kpi_worker.sync.targets import (
    AGE_ANCHORS,
    KPI_SPECS,
    scorecard_name,
    subject_name,
    targets,
)


def _demo_fields():  # type: ignore[no-untyped-def]
    config = load_config(path_of("demo-salesforce.yaml"))
    return config.kpi_fields_for(config.sources[0])


def test_every_kpi_has_labels_in_both_languages() -> None:
    for key, spec in {**KPI_SPECS, **AGE_ANCHORS}.items():
        for label, help_text in (spec.en, spec.fr):
            assert label and help_text, key
        assert spec.en != spec.fr or key == "quota", key


def test_scorecard_object_key_dimensions_and_kpis() -> None:
    fields = _demo_fields()
    objects, created = targets(fields, "salesforce", "en")
    assert [(o.name, o.label) for o in objects] == [("KPI_Scorecard__c", "KPI Scorecard")]
    by_name = {(f.object, f.name): f for f in created}
    key = by_name[("KPI_Scorecard__c", fields.scorecard.external_id)]
    assert key.external_id and key.unique and key.type == "text"
    rep = by_name[("KPI_Scorecard__c", fields.scorecard.columns("salesforce")["rep_field"])]
    assert rep.type == "lookup" and rep.reference_to == "User"
    for kpi, name in fields.scorecard.fields.items():
        field = by_name[("KPI_Scorecard__c", name)]
        assert field.type == {"currency": "currency", "percent": "percent"}.get(
            KPI_SPECS[kpi].kind, "number"
        )
        assert field.label == KPI_SPECS[kpi].en[0]


def test_ages_become_date_fields_unless_daily_ages() -> None:
    fields = _demo_fields()
    assert fields.deal is not None and "days_in_stage" in fields.deal.fields
    _, created = targets(fields, "salesforce", "fr")
    stage = next(f for f in created if f.name == fields.deal.fields["days_in_stage"])
    assert stage.type == "date"
    assert stage.label == "Étape commencée le"
    assert "AUJOURDHUI()" in stage.help_text
    daily = fields.model_copy(update={"deal": fields.deal.model_copy(update={"daily_ages": True})})
    _, created = targets(daily, "salesforce", "fr")
    stage = next(f for f in created if f.name == fields.deal.fields["days_in_stage"])
    assert stage.type == "number" and stage.label == "Jours dans l'étape"


def test_scorecard_names_in_both_languages() -> None:
    assert scorecard_name(subject_name("org", "org", "en"), "2026-Q3", "en") == "Org - 2026-Q3"
    assert (
        scorecard_name(subject_name("org", "org", "fr"), "2026-Q3", "fr")
        == "Organisation - 2026-T3"
    )
    unassigned = subject_name("rep", "unassigned", "fr", unassigned=True)
    assert scorecard_name(unassigned, "FY2026", "fr") == "Non attribué - Exercice 2026"
    assert subject_name("rep", "unassigned", "en", unassigned=True) == "Unassigned"
    assert scorecard_name("Alice Martin", "2026-07", "fr") == "Alice Martin - 2026-07"
    assert scorecard_name("Alice Martin", "FY2026", "en") == "Alice Martin - FY2026"
    assert subject_name("team", "France Sud", "fr") == "France Sud"
    assert len(scorecard_name("x" * 100, "2026-Q3", "en")) == 80  # Salesforce's Name length
