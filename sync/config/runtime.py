"""How the worker runs: writes (batch size, dry run, language), the state store, the schedule
(a crontab expression translated for APScheduler) and runtime settings."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

from crm_kpi_worker.sync.config.base import (
    ConfigModel,
    EnvRef,
    EnvVarName,
    SecretError,
    TimezoneName,
    beside_config,
    error_at,
    not_interpolation,
    raise_all,
    rule,
)

if TYPE_CHECKING:
    from crm_kpi_worker.connectors.base import SetupSettings

__all__ = [
    "BudgetSettings",
    "GrantTo",
    "HttpSettings",
    "RuntimeSettings",
    "Schedule",
    "StoreSettings",
    "WriteSettings",
    "cron_trigger",
]


class GrantTo(ConfigModel):
    """Who ``setup`` gives read access to the KPI fields (on Salesforce, by assigning the
    read permission set; HubSpot properties are visible to every user with CRM access)."""

    reps: bool = True
    """Every active user who is a rep (owns deals the worker reads, or has a quota)."""
    profiles: tuple[str, ...] = ()
    """And every active user of these profiles, by name (e.g. "Sales Manager")."""


_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def _duration(value: Any) -> Any:
    """``1d``, ``12h``, ``30m``, ``45s`` (a whole number and a unit) as a timedelta; seconds
    are for tests and soak runs with a schedule in seconds."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    match = _DURATION.match(str(value))
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{value!r} is not a duration; write a whole number and a unit d, h or m,"
            " e.g. 1d, 12h, 30m (s, seconds, for tests; or null: never)"
        )
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class BudgetSettings(ConfigModel):
    """How much of the CRM's daily API allowance the worker may use."""

    max_share_of_daily_limit: Annotated[float, Field(gt=0, le=1)] = 0.5
    """The worker stops a run (cleanly: what it pulled and wrote is kept, the next run
    resumes) before the org's calls of the day would pass this share of its daily limit,
    whoever made them: the rest stays for the other integrations."""


class WriteSettings(ConfigModel):
    batch_size: Annotated[int, Field(ge=1, le=200)] = 200
    """Records per write call, at most; HubSpot batches are further capped at 100."""
    dry_run: bool = False
    """Compute and print the diff, write nothing."""
    language: Literal["en", "fr"] = "en"
    """Language of field labels and help texts."""
    grant_to: GrantTo = GrantTo()
    """Who ``setup`` gives read access to the KPI fields."""
    verify_every: Annotated[dt.timedelta | None, BeforeValidator(_duration)] = dt.timedelta(days=1)
    """How often a run reads back every record the worker wrote and repairs what differs
    (drift): ``1d``, ``12h``, ``30m``; ``null`` never (``sync --once --verify`` still does)."""

    def setup_settings(self) -> SetupSettings:
        """What ``setup`` needs of these settings, as connectors take it."""
        from crm_kpi_worker.connectors.base import SetupSettings

        return SetupSettings(
            language=self.language,
            grant_to_reps=self.grant_to.reps,
            grant_to_profiles=self.grant_to.profiles,
        )

    def batch_size_for(self, crm: str) -> int:
        """The batch size for ``crm``: at most its registry entry's ``write_batch_limit``."""
        from crm_kpi_worker.connectors.registry import plugin_for

        return min(self.batch_size, plugin_for(crm).write_batch_limit)


def _sqlite_url_beside_config(url: str, config_dir: Path | None) -> str:
    """``url`` with a relative SQLite file path made relative to ``config_dir``; other URLs
    (PostgreSQL, in-memory SQLite, ``file:`` URIs, absolute paths) unchanged."""
    if config_dir is None or not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    resolved = beside_config(Path(database), config_dir)
    return parsed.set(database=str(resolved)).render_as_string(hide_password=False)


_STORE_SCHEMES = re.compile(r"^(sqlite|postgresql)(\+[a-z0-9_]+)?$")


def _is_store_url(value: str) -> bool:
    scheme, sep, _ = value.partition("://")
    return bool(sep) and _STORE_SCHEMES.match(scheme) is not None


def _check_store_url(value: str) -> str:
    not_interpolation(value)
    scheme, _, rest = value.partition("://")
    if not _is_store_url(value):
        hint = " (use postgresql://)" if scheme in ("postgres", "pg") else ""
        raise rule(
            "expected an SQLAlchemy URL: sqlite:///path/to/file.sqlite or"
            f" postgresql://user@host/db{hint}"
        )
    if scheme.startswith("postgresql"):
        netloc = rest.split("/", 1)[0]
        if ":" in netloc.rpartition("@")[0]:
            raise rule(
                "a password never goes in the file: put the whole URL in an environment"
                " variable and name it with url_env"
            )
    return value


class StoreSettings(ConfigModel):
    url: Annotated[str, AfterValidator(_check_store_url)] | None = None
    """SQLAlchemy URL without password; default sqlite:///crm-kpi.sqlite. A relative SQLite
    path (here or in url_env's variable) is relative to the config file's folder."""
    url_env: EnvVarName | None = None
    """Environment variable holding the URL (for URLs with a password)."""

    DEFAULT_URL: ClassVar[str] = "sqlite:///crm-kpi.sqlite"
    # The config file's folder (set by AppConfig from the loader's context), against which
    # resolve_url() and describe() place a relative SQLite file.
    _config_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_url(self) -> StoreSettings:
        if self.url is not None and self.url_env is not None:
            raise rule("give url or url_env, not both")
        return self

    @property
    def backend(self) -> str | None:
        """'sqlite' or 'postgresql', or None when the URL is in the environment."""
        if self.url_env is not None:
            return None
        return (self.url or self.DEFAULT_URL).split(":", 1)[0].split("+", 1)[0]

    def resolve_url(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """The store's URL, a relative SQLite file placed beside the config file."""
        if self.url_env is None:
            return SecretStr(
                _sqlite_url_beside_config(self.url or self.DEFAULT_URL, self._config_dir)
            )
        url = EnvRef(env=self.url_env).resolve(environ)
        if not _is_store_url(url.get_secret_value()):
            raise SecretError(
                f"environment variable {self.url_env} does not hold an SQLAlchemy URL"
                " (sqlite:///... or postgresql://...)"
            )
        return SecretStr(_sqlite_url_beside_config(url.get_secret_value(), self._config_dir))

    def describe(self) -> str:
        if self.url_env is not None:
            return f"URL from ${self.url_env}"
        url = _sqlite_url_beside_config(self.url or self.DEFAULT_URL, self._config_dir)
        backend = self.backend
        if backend == "sqlite":
            return f"sqlite ({url.partition(':///')[2] or 'in memory'})"
        netloc = url.partition("://")[2].split("/", 1)
        host = netloc[0].rpartition("@")[2]
        database = netloc[1].split("?", 1)[0] if len(netloc) > 1 else ""
        return f"{backend} ({host}/{database})"


_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_day_of_week(field: str) -> str:
    """Translate crontab day-of-week (0 or 7 = Sunday) to APScheduler 3's names.

    APScheduler 3 numbers days from Monday = 0 even in ``CronTrigger.from_crontab``, so a
    literal "1-5" would run Tuesday to Saturday; names are unambiguous.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        spec, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in day-of-week field: {item!r}")
        if spec == "*":
            low, high = 0, 6
        else:
            low_text, _, high_text = spec.partition("-")
            low = _dow_number(low_text)
            high = _dow_number(high_text) if high_text else (6 if step_text else low)
            if high_text and high < low:
                high += 7  # e.g. fri-mon
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _dow_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7 if int(text) != 7 else 0
    if text.lower()[:3] in _DOW_NAMES and len(text) == 3:
        return _DOW_NAMES.index(text.lower())
    raise ValueError(f"bad day of week {text!r} (0-7 or sun..sat)")


def cron_trigger(expression: str, timezone: str) -> Any:
    """An APScheduler CronTrigger for a standard 5-field crontab expression."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_crontab_day_of_week(day_of_week),
        timezone=ZoneInfo(timezone),
    )


def _check_cron(value: str) -> str:
    try:
        cron_trigger(value, "UTC")
    except ValueError as exc:
        raise rule(
            f"invalid cron expression: {exc}; expected 5 fields 'minute hour day-of-month"
            " month day-of-week', e.g. '0 6 * * 1-5' (06:00 Monday to Friday)"
        ) from None
    return " ".join(value.split())


class Schedule(ConfigModel):
    cron: Annotated[str, AfterValidator(_check_cron)] | None = None
    """Standard 5-field crontab expression (day of week 0/7 = Sunday)."""
    every_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None
    every_seconds: Annotated[int, Field(ge=1, le=86400)] | None = None
    """A fixed interval in seconds, for tests and soak runs (the chaos test, ``bench_soak``):
    each run costs API calls, so production schedules use ``cron`` or ``every_minutes``."""
    timezone: TimezoneName | None = None
    """Timezone of the cron expression (default: the fiscal timezone)."""
    run_at_start: bool = True
    """The service runs once as soon as it starts, then on the schedule (``crm-kpi sync
    --no-initial-run`` overrides it)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        kinds = [k for k in (self.cron, self.every_minutes, self.every_seconds) if k is not None]
        if len(kinds) != 1:
            raise rule(
                "give either cron (e.g. '0 6 * * *') or every_minutes (or, for tests,"
                " every_seconds), exactly one"
            )
        if self.timezone is not None and self.cron is None:
            raise_all(
                "schedule", [error_at(("timezone",), "timezone applies only to cron schedules")]
            )
        return self

    def trigger(self, default_timezone: str) -> Any:
        """The APScheduler trigger: cron in ``timezone`` (else ``default_timezone``, the fiscal
        one), or a fixed interval."""
        if self.cron is not None:
            return cron_trigger(self.cron, self.timezone or default_timezone)
        from apscheduler.triggers.interval import IntervalTrigger

        if self.every_seconds is not None:
            return IntervalTrigger(seconds=self.every_seconds, timezone=ZoneInfo(default_timezone))
        return IntervalTrigger(minutes=self.every_minutes, timezone=ZoneInfo(default_timezone))

    def describe(self, default_timezone: str) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone or default_timezone})"
        if self.every_seconds is not None:
            return f"every {self.every_seconds} second{'s' if self.every_seconds != 1 else ''}"
        return f"every {self.every_minutes} minute{'s' if self.every_minutes != 1 else ''}"

    def in_words(self, default_timezone: str) -> str:
        """The schedule as a person says it: "every 5 minutes", "At 06:00, Monday through
        Friday (cron '0 6 * * 1-5', Europe/Paris)"."""
        if self.cron is None:
            return self.describe(default_timezone)
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        words = get_description(self.cron, options)
        return f"{words} (cron '{self.cron}', {self.timezone or default_timezone})"


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class HttpSettings(ConfigModel):
    """The service's HTTP port: /healthz, /readyz, /metrics and the status page."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    """Address to bind; loopback unless set otherwise (0.0.0.0 in a container that others
    scrape)."""
    port: Annotated[int, Field(ge=1, le=65535)]
    """TCP port, e.g. 8080."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class RuntimeSettings(ConfigModel):
    as_of: AwareDatetime | None = None
    """Pin the evaluation instant (backfills, tests); default: now."""
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    http: HttpSettings | None = None
    """The service's HTTP port (``crm-kpi sync`` without ``--once``); none when absent."""
    log_format: Literal["text", "json"] | None = None
    """``text`` (one line per event) or ``json`` (one JSON object per event); default: the
    ``CRM_KPI_LOG_FORMAT`` environment variable (the container image sets ``json``), else
    ``text``."""
    progress_seconds: Annotated[float, Field(ge=0, le=3600)] = 30
    """Without a terminal (the service, a cron job), how often a long run logs its progress
    (0: at every page)."""
    planned_records_kept: Annotated[int, Field(ge=1)] = 100
    """The records each run planned to write (``crm-kpi runs show``) are kept for the newest
    runs that planned any, this many; older runs keep their report (counts, exclusions,
    failures)."""
