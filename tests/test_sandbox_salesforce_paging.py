"""The sandbox Salesforce's query pages against the documented batch rule (Query Options
header): child records of relationship subqueries count toward the batch size, a page may hold
fewer records than asked, totalSize counts the parents, and a large child result is cut with a
nextRecordsUrl of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from salesforce_paging import inlined_rows, pages_of
from simple_salesforce import Salesforce

from crm_kpi_worker.sandbox.salesforce.ids import make_id
from crm_kpi_worker.sandbox.salesforce.server import SalesforceSandbox
from crm_kpi_worker.sandbox.salesforce.subqueries import CHILD_BATCH_SIZE

HISTORY_QUERY = (
    "SELECT Id, (SELECT StageName FROM OpportunityHistories ORDER BY CreatedDate),"
    " (SELECT NewValue FROM Histories WHERE Field = 'CloseDate' ORDER BY CreatedDate)"
    " FROM Opportunity ORDER BY Id"
)


def _pages(sf: Salesforce, query: str, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
    headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
    page = sf.query(query, headers=headers)
    yield page
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True, headers=headers)
        yield page


def _children_per_deal(sandbox: SalesforceSandbox) -> np.ndarray:
    data = sandbox.org.data
    live = ~data.deals.is_deleted
    counts = np.bincount(data.stage_changes.deal, minlength=len(data.deals))
    counts += np.bincount(data.close_date_changes.deal, minlength=len(data.deals))
    return counts[live]


@pytest.mark.parametrize("batch_size", [2000, 500])
def test_child_records_count_toward_the_batch_size(
    sf_sandbox: SalesforceSandbox, sf: Salesforce, batch_size: int
) -> None:
    pages = list(_pages(sf, HISTORY_QUERY, batch_size))
    children = _children_per_deal(sf_sandbox)
    assert {p["totalSize"] for p in pages} == {len(children)}  # parents, on every page
    records = [r for p in pages for r in p["records"]]
    assert [inlined_rows(r) for r in records] == (1 + children).tolist()
    sizes = [sum(inlined_rows(r) for r in p["records"]) for p in pages]
    assert all(size <= batch_size for size in sizes)
    # A page takes parents while they fit: the next page's first parent would not have, and
    # the page's locator continues at that parent.
    served = 0
    for page, following, size in zip(pages, pages[1:], sizes, strict=False):
        served += len(page["records"])
        assert size + inlined_rows(following["records"][0]) > batch_size
        assert page["nextRecordsUrl"].endswith(f"-{served}")
    assert len(pages) == pages_of(records, batch_size) > -(-len(records) // batch_size)


def test_a_query_without_subqueries_pages_by_parents(sf: Salesforce) -> None:
    pages = list(_pages(sf, "SELECT Id FROM Opportunity", 500))
    assert [len(p["records"]) for p in pages[:-1]] == [500] * (len(pages) - 1)


@pytest.fixture(scope="module")
def busy_deal() -> Iterator[tuple[SalesforceSandbox, str, int]]:
    """A sandbox with one deal whose close date moved 450 times (450 rows in each history)."""
    with SalesforceSandbox.start(seed=7) as sandbox:
        org = sandbox.org
        row = int(np.flatnonzero(~org.data.deals.is_deleted)[0])
        before = sandbox.client().query(
            f"SELECT Id FROM OpportunityHistory WHERE OpportunityId = '{make_id('006', row)}'"
        )["totalSize"]
        for day in range(450):
            org.write(
                "Opportunity",
                {"CloseDate": f"2031-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"},
                user_row=org.admin_row,
                row=row,
            )
        yield sandbox, make_id("006", row), before + 450


def test_a_large_child_result_is_cut_and_continued(
    busy_deal: tuple[SalesforceSandbox, str, int],
) -> None:
    sandbox, deal_id, stage_rows = busy_deal
    sf = sandbox.client()
    query = (
        "SELECT Id, (SELECT Id, StageName FROM OpportunityHistories ORDER BY CreatedDate)"
        f" FROM Opportunity WHERE Id = '{deal_id}'"
    )
    every = sf.query_all(
        f"SELECT Id FROM OpportunityHistory WHERE OpportunityId = '{deal_id}' ORDER BY CreatedDate"
    )["records"]
    (record,) = sf.query(query)["records"]
    history = record["OpportunityHistories"]
    assert history["totalSize"] == stage_rows == len(every)
    assert history["done"] is False and len(history["records"]) == CHILD_BATCH_SIZE
    assert history["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    assert history["nextRecordsUrl"].endswith(f"-{CHILD_BATCH_SIZE}")
    rest = sf.query_more(history["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True and rest["totalSize"] == stage_rows
    ids = [r["Id"] for r in history["records"] + rest["records"]]
    assert ids == [r["Id"] for r in every]  # in order, none twice, none missing
    with pytest.raises(Exception, match="INVALID_QUERY_LOCATOR"):
        sf.query_more(history["nextRecordsUrl"], identifier_is_url=True)  # read to the end


def test_a_parent_with_more_children_than_the_batch_is_served_alone(
    busy_deal: tuple[SalesforceSandbox, str, int],
) -> None:
    sandbox, deal_id, _ = busy_deal
    sf = sandbox.client()
    pages = list(_pages(sf, HISTORY_QUERY, 200))
    (alone,) = [p for p in pages if any(r["Id"] == deal_id for r in p["records"])]
    # 1 + 200 + 200 inlined rows: more than the batch of 200, so the page holds that deal only.
    assert [r["Id"] for r in alone["records"]] == [deal_id]
    assert inlined_rows(alone["records"][0]) == 1 + 2 * CHILD_BATCH_SIZE
    assert all(sum(inlined_rows(r) for r in p["records"]) <= 200 for p in pages if p is not alone)


def test_child_cursors_do_not_crowd_out_the_sessions_query_cursors(
    busy_deal: tuple[SalesforceSandbox, str, int],
) -> None:
    """Eleven unfinished child results stay readable: the limit of open cursors a session
    keeps counts queries, and child results belong to their query."""
    sandbox, deal_id, _ = busy_deal
    sf = sandbox.client()
    query = (
        f"SELECT Id, (SELECT Id FROM OpportunityHistories) FROM Opportunity WHERE Id = '{deal_id}'"
    )
    cut = [sf.query(query)["records"][0]["OpportunityHistories"] for _ in range(11)]
    for history in cut:
        assert sf.query_more(history["nextRecordsUrl"], identifier_is_url=True)["done"] is True
