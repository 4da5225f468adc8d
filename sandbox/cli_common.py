"""What the ``crm-kpi sandbox <crm>`` commands share: the options every sandbox takes and the
serving loop (generate the data, build the sandbox, serve until interrupted)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

__all__ = ["common_options", "date_option", "fault_help", "serve"]

#: The options every fault rule takes (``FaultRule``), as ``--help`` lists them.
FAULT_OPTIONS = (
    ("path", 'regular expression searched in the request path ("": every path)'),
    ("method", "GET, POST, PATCH... (default: any)"),
    ("times", "how many times it fires (default 1; null: no limit)"),
    ("every", "fire on every n-th matching request (default 1)"),
    ("probability", "chance to fire on a match, from a seeded generator (default 1.0)"),
    ("status", "server_error: the HTTP status, 500, 502 or 503 (default 503)"),
    ("retry_after", "rate_limit: the Retry-After seconds (default 1)"),
    ("delay", "slow: seconds before answering (default 1.0)"),
    ("record_ids", "write_failure: the records that fail (default: any record)"),
    ("message", "job_failure: the failed job's error message (default: the CRM's usual one)"),
    ("polls", "slow_job: status polls answered in progress (default 1; null: until cleared)"),
    ("cut_after", "cut_download: bytes sent before the connection closes (default 1024)"),
)


def fault_help(answers: Mapping[str, str]) -> str:
    """The ``--help`` epilog: each fault kind (``answers``: what this CRM's sandbox answers
    for it) and the options of a rule. ``\b`` keeps click from rewrapping the lists."""
    from crm_kpi_worker.sandbox.faults import FAULT_KINDS

    assert set(answers) == set(FAULT_KINDS), "every fault kind needs its answer"
    width = max(len(name) for name in (*FAULT_KINDS, *(o for o, _ in FAULT_OPTIONS)))
    kinds = [f"  {kind:<{width}}  {answers[kind]}" for kind in FAULT_KINDS]
    options = [f"  {name:<{width}}  {text}" for name, text in FAULT_OPTIONS]
    return "\n".join(
        [
            "\b",
            "Fault kinds (--fault '{\"kind\": KIND, OPTION: VALUE, ...}',"
            " or POST /_sandbox/faults):",
            *kinds,
            "",
            "\b",
            "Options of a fault rule:",
            *options,
        ]
    )


def date_option(_ctx: Any, _param: Any, value: str | None) -> dt.date | None:
    """A click callback: an ISO date option (``--reference-date 2026-09-30``), None if absent."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-09-30") from None


def _faults(_ctx: Any, _param: Any, values: tuple[str, ...]) -> list[Any]:
    from crm_kpi_worker.sandbox.faults import FaultRule

    rules = []
    for value in values:
        try:
            rules.append(FaultRule.from_json(json.loads(value)))
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return rules


def common_options(port: int, records: str, workdir_holds: str) -> Callable[[Any], Any]:
    """The options both sandboxes take (listening, generated data, work folder, faults)."""
    options = [
        click.option(
            "--host", default="127.0.0.1", show_default=True, help="Loopback address to bind."
        ),
        click.option(
            "--port",
            default=port,
            show_default=True,
            type=click.IntRange(0, 65535),
            help="0 picks a free port.",
        ),
        click.option(
            "--seed", default=42, show_default=True, type=int, help="Seed of the generated data."
        ),
        click.option(
            "--deals",
            type=click.IntRange(1, 1_000_000),
            default=None,
            help=f"{records} to generate (default: the demo scenario only).",
        ),
        click.option(
            "--reference-date",
            callback=date_option,
            help="Last day of the demo quarter (a quarter end). Default 2026-09-30.",
        ),
        click.option(
            "--workdir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Where to write {workdir_holds} (default: a temporary folder).",
        ),
        click.option(
            "--fault",
            "faults",
            multiple=True,
            callback=_faults,
            help="A fault rule as JSON, e.g. "
            '\'{"kind": "rate_limit", "probability": 0.05, "times": null}\'. '
            "Repeatable; more at runtime via POST /_sandbox/faults.",
        ),
        click.option("--verbose", is_flag=True, help="Log every request."),
    ]

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def serve(
    build: Callable[[Any], Any],
    *,
    seed: int,
    deals: int | None,
    reference_date: dt.date | None,
    host: str,
    port: int,
    faults: list[Any],
    verbose: bool,
) -> None:
    """Generate the data, ``build`` the sandbox over it, serve until interrupted."""
    from crm_kpi_worker.sandbox.generator import generate

    if verbose:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("werkzeug").setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        sandbox = build(generate(seed=seed, deals=deals, reference_date=reference_date))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    for rule in faults:
        sandbox.faults.add(rule)
    for line in sandbox.describe():
        click.echo(line)
    click.echo(f"  ready in {time.perf_counter() - started:.1f} s; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sandbox.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sandbox.stop()
        click.echo("sandbox stopped")
