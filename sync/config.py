"""The worker's configuration: one pydantic tree for the one YAML file ops write.

Load it with :func:`crm_kpi_worker.sync.config_loader.load_config`, which turns every validation
error into a problem with file, line and key path. Rules of the tree:

- ``extra="forbid"`` everywhere: a mistyped key is an error, never silently ignored.
- Secrets are never written inline. A secret is ``{env: VAR}``, ``{file: /path}`` or
  ``{file_env: VAR}`` (a variable holding a path); it is read only when :meth:`EnvRef.resolve`
  (etc.) is called, so a config validates on a machine without the secrets. Non-secret
  settings such as a username may also be written plainly or as ``{value: ...}``.
- ``{env: VAR, default: ...}`` on a secret is accepted only when the secret is sent to a
  loopback host (the built-in sandbox CRM, whose documented password is not a secret). A real
  org's secrets must come from the environment or a file.
- Reprs and error messages never contain a secret value (``SecretStr``,
  ``hide_input_in_errors``).
- Cross-field rules live in validators here, so building an :class:`AppConfig` in code checks
  exactly what the loader checks. Union members are tagged ``type=...``, ``method=...`` or
  ``ref=...`` in pydantic's error locations; the loader drops those tags from the key paths.
- Relative paths (CA bundles, CSV files, secret files, the SQLite store's file) are resolved
  against the config file's folder when the loader passes ``context={"base_dir": folder}``
  (:func:`beside_config`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from crm_kpi_worker.kpis.results import DEAL_KPI_KEYS, KPI_KEYS
from crm_kpi_worker.sync.model import DealType, ForecastCategory

__all__ = [
    "DEAL_KPIS",
    "REP_KPIS",
    "RULE_ERROR",
    "SCORECARD_KPIS",
    "UNION_TAG_KEYS",
    "AppConfig",
    "CurrencySettings",
    "DealTarget",
    "DealTypeMapping",
    "EnvRef",
    "FileEnvRef",
    "FileRef",
    "FiscalCalendar",
    "ForecastCategoryMapping",
    "HubSpotMapping",
    "HubSpotOAuth",
    "HubSpotPrivateApp",
    "HubSpotRateLimits",
    "HubSpotSource",
    "KpiFields",
    "OwnerTarget",
    "PayoutCurve",
    "QuotaEntry",
    "QuotaSettings",
    "QuotaSourceSetting",
    "RampSettings",
    "RepTarget",
    "RuntimeSettings",
    "SalesforceClientCredentials",
    "SalesforceJwt",
    "SalesforceMapping",
    "SalesforceOAuthPassword",
    "SalesforcePassword",
    "SalesforceSession",
    "SalesforceSource",
    "Schedule",
    "ScorecardTarget",
    "SecretError",
    "SecretRef",
    "StageMap",
    "StoreSettings",
    "ValueRef",
    "VariablePay",
    "WriteSettings",
    "iter_secret_refs",
]

#: pydantic error type of every rule this module checks itself.
RULE_ERROR = "config_rule"
#: Discriminator keys of the tagged unions; their tags appear in error locations as "key=value".
UNION_TAG_KEYS = ("type", "method", "ref")

# ---------------------------------------------------------------------------------------------
# KPI keys (KPIS.md). Per rep and period: written to the scorecard object or onto the rep.
# The engine's own lists (kpis/ is the single source; sync may import it, not the reverse).
SCORECARD_KPIS: tuple[str, ...] = KPI_KEYS
REP_KPIS: tuple[str, ...] = SCORECARD_KPIS
#: Per deal: written on the opportunity/deal itself.
DEAL_KPIS: tuple[str, ...] = DEAL_KPI_KEYS

CrmType = Literal["salesforce", "hubspot"]
PeriodKind = Literal["month", "quarter", "year"]
_ALL_PERIODS: tuple[PeriodKind, ...] = ("month", "quarter", "year")

# ---------------------------------------------------------------------------------------------
# Errors


def _rule(message: str) -> PydanticCustomError:
    # No context: the message is used verbatim (braces such as "{env: VAR}" stay as written).
    return PydanticCustomError(RULE_ERROR, message)


def _at(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    return InitErrorDetails(type=_rule(message), loc=loc, input=None)


def _raise_all(title: str, problems: list[InitErrorDetails]) -> None:
    """Raise every problem at once, each at its own location under the validated value."""
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def _suggest(value: object, choices: Iterable[str], form: str = "; did you mean '{}'?") -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return form.format(close[0]) if close else ""


def _quoted(choices: Iterable[str]) -> str:
    return ", ".join(f"'{c}'" for c in choices)


class SecretError(Exception):
    """A secret could not be read. The message names the variable or file, never the value."""


# ---------------------------------------------------------------------------------------------
# Base model


class ConfigModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        use_attribute_docstrings=True,
    )


# ---------------------------------------------------------------------------------------------
# Scalar types


def _not_interpolation(value: Any) -> Any:
    if isinstance(value, str) and "${" in value:
        raise _rule(
            "'${...}' interpolation is not supported; read a value from the environment with"
            " {env: VAR_NAME}"
        )
    return value


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise _rule(
            "expected an environment variable name (letters, digits and '_', not starting with"
            " a digit), e.g. CRM_KPI_SF_PASSWORD"
        )
    return value


def _config_dir(info: ValidationInfo) -> Path | None:
    """The config file's folder, when the loader gives it (``context={"base_dir": folder}``)."""
    base = (info.context or {}).get("base_dir")
    return None if base is None else Path(base)


def beside_config(path: Path, config_dir: Path | None) -> Path:
    """The one rule for relative paths in a config: relative to the config file's folder
    (``config_dir``; None for a config built in code: left as is)."""
    path = path.expanduser()
    if config_dir is not None and not path.is_absolute():
        path = config_dir / path
    return path


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    return beside_config(value, _config_dir(info))


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


def _matching(pattern: str, message: str) -> AfterValidator:
    """A validator refusing text that does not match ``pattern``, with ``message``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise _rule(message)
        return value

    return AfterValidator(check)


def _text_from_scalar(value: Any) -> Any:
    # YAML reads `1234567` and `2026` as integers; CRM values and periods are text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


EnvVarName = Annotated[str, AfterValidator(_check_env_name)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
NonEmptyText = Annotated[
    str, BeforeValidator(_not_interpolation), Field(min_length=1, pattern=r"\S")
]
CrmValue = Annotated[
    str,
    BeforeValidator(_text_from_scalar),
    BeforeValidator(_not_interpolation),
    Field(min_length=1, max_length=255),
]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


def _check_fraction(value: Decimal) -> Decimal:
    if value > 1:
        raise _rule(
            f"a probability is a fraction between 0 and 1; for {value}% write {value / 100}"
            if value <= 100
            else "a probability is a fraction between 0 and 1"
        )
    if value < 0:
        raise _rule("a probability is a fraction between 0 and 1")
    return value


Fraction = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_check_fraction)]
StageKey = Annotated[
    str,
    _matching(
        r"^[a-z][a-z0-9_]{0,63}$",
        "a canonical stage key is lower case letters, digits and '_' (e.g. 'closed_won'); the"
        " CRM's own stage value goes in 'crm'",
    ),
]
SourceName = Annotated[
    str,
    _matching(
        r"^[a-z0-9][a-z0-9_-]{0,63}$",
        "a source name is 1-64 lower case letters, digits, '-' or '_' (it is used in state keys"
        " and logs), e.g. 'salesforce-prod'",
    ),
]
Timeout = Annotated[float, Field(gt=0, le=600)]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$|^[^@\s]+@localhost$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise _rule("expected an email address such as alice.martin@example.com")
    return value.lower()


Email = Annotated[str, AfterValidator(_check_email)]


def _check_currency(value: str) -> str:
    if re.match(r"^[A-Z]{3}$", value):
        return value
    hint = f"; did you mean '{value.upper()}'?" if re.match(r"^[A-Za-z]{3}$", value) else ""
    raise _rule(f"expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR{hint}")


CurrencyCode = Annotated[str, AfterValidator(_check_currency)]


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _rule(
            f"unknown timezone '{value}'; expected an IANA name such as 'Europe/Paris' or"
            f" 'UTC'{_suggest(value, _timezones())}"
        ) from None
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


TimezoneName = Annotated[str, AfterValidator(_check_timezone)]


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(value: str, *, http_on_loopback: bool) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed or out-of-range port
    except ValueError:
        raise _rule("malformed URL; expected e.g. https://acme.my.salesforce.com") from None
    loopback = _is_loopback_host(parts.hostname)
    allowed = ("https", "http") if http_on_loopback and loopback else ("https",)
    if parts.scheme not in allowed:
        raise _rule(
            "expected an https:// URL"
            + (" (http:// is accepted only for a loopback host)" if http_on_loopback else "")
        )
    if not parts.hostname:
        raise _rule("the URL has no host; expected e.g. https://acme.my.salesforce.com")
    if parts.username is not None or parts.password is not None:
        raise _rule("credentials never go in a URL; use the auth section")
    if parts.query or parts.fragment:
        raise _rule("the URL must not have a query string or a fragment")
    return value.rstrip("/")


HttpsUrl = Annotated[
    str,
    BeforeValidator(_not_interpolation),
    AfterValidator(lambda v: _url(v, http_on_loopback=False)),
]
ApiUrl = Annotated[
    str,
    BeforeValidator(_not_interpolation),
    AfterValidator(lambda v: _url(v, http_on_loopback=True)),
]


def _url_is_loopback(url: str | None) -> bool:
    return url is not None and _is_loopback_host(urlsplit(url).hostname)


# Salesforce API names. A segment is a standard name (CloseDate) or a custom one
# (Churn_Date__c, ns__Churn_Date__c); relationship paths join segments with dots.
_SF_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?:__[A-Za-z0-9](?:[A-Za-z0-9]|_(?!_))*)*"
_SF_FIELD = re.compile(rf"^{_SF_SEGMENT}$")
_SF_PATH = re.compile(rf"^{_SF_SEGMENT}(?:\.{_SF_SEGMENT})*$")
_SF_CUSTOM = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9]{0,14}__)?([A-Za-z](?:[A-Za-z0-9]|_(?!_)){0,39})__c$"
)


def _sf_field(value: str, *, path: bool) -> str:
    pattern = _SF_PATH if path else _SF_FIELD
    if not pattern.match(value) or value.endswith("_"):
        raise _rule(
            "expected a Salesforce field API name such as 'CloseDate' or 'Churn_Date__c' (the"
            " API name, not the label"
            + ("; a related field is written 'Account.Churn_Date__c')" if path else ")")
        )
    return value


SalesforceField = Annotated[str, AfterValidator(lambda v: _sf_field(v, path=False))]
SalesforceFieldPath = Annotated[str, AfterValidator(lambda v: _sf_field(v, path=True))]
SalesforceObject = Annotated[
    str,
    _matching(_SF_FIELD.pattern, "expected a Salesforce object API name such as 'Event' or 'Task'"),
]
_HS_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
HubSpotProperty = Annotated[
    str,
    _matching(
        _HS_PROPERTY.pattern,
        "expected a HubSpot property internal name (lower case letters, digits and '_'), e.g."
        " 'closedate'",
    ),
]


def _check_sf_custom_name(value: str, what: str) -> str | None:
    """Why ``value`` is not a writable Salesforce custom field/object name, or None."""
    if not _SF_CUSTOM.match(value):
        return (
            f"expected a Salesforce custom {what} API name ending in '__c', e.g."
            f" '{'KPI_Win_Rate__c' if what == 'field' else 'KPI_Scorecard__c'}'; the worker"
            " writes only custom fields, never standard ones"
        )
    return None


def _check_hs_name(value: str, what: str) -> str | None:
    if what == "object":
        if re.match(r"^(?:2-\d+|p_[a-z0-9_]+|[a-z][a-z0-9_]*)$", value):
            return None
        return (
            "expected a HubSpot custom object type: its id such as '2-1234567' or its"
            " fully qualified name such as 'p_kpi_scorecard'"
        )
    if _HS_PROPERTY.match(value):
        return None
    return (
        "expected a HubSpot property internal name (lower case letters, digits and '_'), e.g."
        " 'kpi_win_rate'"
    )


# ---------------------------------------------------------------------------------------------
# Tagged unions


def _tagged(key: str, members: Mapping[str, type[BaseModel]], what: str) -> Any:
    """A union discriminated on ``key``, with actionable errors for a missing or unknown tag."""

    def check(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise _rule(f"expected a mapping with '{key}: {' | '.join(members)}'")
        tag = value.get(key)
        if tag is not None and not isinstance(tag, str):
            tag = repr(tag)
        if tag is None:
            raise ValidationError.from_exception_data(
                what,
                [
                    _at(
                        (key,),
                        f"missing required key '{key}': the {what}, one of {_quoted(members)}",
                    )
                ],
            )
        if tag not in members:
            raise ValidationError.from_exception_data(
                what,
                [
                    _at(
                        (key,),
                        f"unknown {what} {tag!r}; expected one of {_quoted(members)}"
                        + _suggest(tag, members),
                    )
                ],
            )
        return value

    def discriminate(value: Any) -> str:
        tag = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return f"{key}={tag}"

    union = Union[tuple(Annotated[cls, Tag(f"{key}={tag}")] for tag, cls in members.items())]  # noqa: UP007
    return Annotated[union, Discriminator(discriminate), BeforeValidator(check)]


# ---------------------------------------------------------------------------------------------
# Secrets and settings read from the environment


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _read_secret_file(path: Path, origin: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(f"secret file {path}{origin} does not exist") from None
    except IsADirectoryError:
        raise SecretError(f"secret file {path}{origin} is a directory") from None
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path}{origin} is not UTF-8 text") from None
    except OSError as exc:
        raise SecretError(f"secret file {path}{origin} cannot be read: {exc.strerror}") from None
    # Files written by `echo` or mounted by Kubernetes end with a newline that is not part of
    # the secret; nothing else is stripped.
    text = text.rstrip("\r\n")
    if not text:
        raise SecretError(f"secret file {path}{origin} is empty")
    return SecretStr(text)


class EnvRef(ConfigModel):
    """``{env: VAR}``: the value of an environment variable, read when resolved."""

    env: EnvVarName
    default: SecretStr | None = None
    """Used when the variable is unset. For a secret, accepted only when the secret is sent
    to a loopback host (the sandbox CRM): a real org's secrets come from the environment."""

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        value = _environ(environ).get(self.env)
        if value is None:
            if self.default is not None:
                return self.default
            raise SecretError(f"environment variable {self.env} is not set")
        if not value:
            raise SecretError(f"environment variable {self.env} is set but empty")
        return SecretStr(value)

    def describe(self) -> str:
        return f"${self.env}" + (" (with a default)" if self.default is not None else "")


class FileRef(ConfigModel):
    """``{file: /path}``: the content of a file (trailing newline removed), read when resolved."""

    file: ConfigPath

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        return _read_secret_file(self.file, "")

    def describe(self) -> str:
        return f"file {self.file}"


class FileEnvRef(ConfigModel):
    """``{file_env: VAR}``: the content of the file whose path is in an environment variable."""

    file_env: EnvVarName

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        path = _environ(environ).get(self.file_env)
        if not path:
            state = "is not set" if path is None else "is set but empty"
            raise SecretError(
                f"environment variable {self.file_env} (path of a secret file) {state}"
            )
        return _read_secret_file(Path(path).expanduser(), f" (from ${self.file_env})")

    def describe(self) -> str:
        return f"file named by ${self.file_env}"


class ValueRef(ConfigModel):
    """``{value: ...}`` or a plain string: a NON-secret setting written in the file."""

    value: NonEmptyText

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        return SecretStr(self.value)

    def describe(self) -> str:
        return "inline value"


SecretRef = EnvRef | FileRef | FileEnvRef | ValueRef
_REF_KEYS = ("env", "file", "file_env", "value")
_SECRET_FORMS = "{env: VAR_NAME}, {file: /path/to/file} or {file_env: VAR_NAME}"  # noqa: S105


def _ref_checker(*, secret: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if isinstance(value, str):
            match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value.strip())
            if match or "${" in value:
                name = match.group(1) if match else "VAR_NAME"
                raise _rule(
                    f"'${{...}}' interpolation is not supported; write {{env: {name}}} to read"
                    " the environment variable"
                )
            if secret:
                raise _rule(f"a secret is never written in the file: give {_SECRET_FORMS}")
            return {"value": value}
        if not isinstance(value, dict):
            forms = _SECRET_FORMS if secret else "text, {value: ...}, " + _SECRET_FORMS
            raise _rule(f"expected {forms}")
        kinds = [k for k in _REF_KEYS if k in value]
        if secret and "value" in kinds:
            raise _rule(
                "{value: ...} is only for non-secret settings such as a username; give this"
                f" secret as {_SECRET_FORMS}"
            )
        if not kinds:
            raise _rule(f"expected {_SECRET_FORMS}" + _suggest(next(iter(value), None), _REF_KEYS))
        if len(kinds) > 1:
            raise _rule(f"give exactly one of {_quoted(kinds)}")
        return value

    return check


def _ref_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = next((k for k in _REF_KEYS if k in value), None)
    else:
        kinds: dict[type, str] = {
            EnvRef: "env",
            FileRef: "file",
            FileEnvRef: "file_env",
            ValueRef: "value",
        }
        kind = kinds.get(type(value))
    return f"ref={kind}"


Secret = Annotated[
    Union[  # noqa: UP007
        Annotated[EnvRef, Tag("ref=env")],
        Annotated[FileRef, Tag("ref=file")],
        Annotated[FileEnvRef, Tag("ref=file_env")],
    ],
    Discriminator(_ref_tag),
    BeforeValidator(_ref_checker(secret=True)),
]
Setting = Annotated[
    Union[  # noqa: UP007
        Annotated[ValueRef, Tag("ref=value")],
        Annotated[EnvRef, Tag("ref=env")],
        Annotated[FileRef, Tag("ref=file")],
        Annotated[FileEnvRef, Tag("ref=file_env")],
    ],
    Discriminator(_ref_tag),
    BeforeValidator(_ref_checker(secret=False)),
]


def iter_secret_refs(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], SecretRef]]:
    """Every env/file reference in a config tree, with its key path (``("sources", 0, ...)``)."""
    if isinstance(value, EnvRef | FileRef | FileEnvRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_secret_refs(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from iter_secret_refs(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_secret_refs(item, (*path, str(key)))


class _Auth(ConfigModel):
    #: Fields holding secrets: a default on their {env: ...} needs a loopback endpoint.
    secret_fields: ClassVar[tuple[str, ...]] = ()


# ---------------------------------------------------------------------------------------------
# Salesforce auth


class SalesforcePassword(_Auth):
    """Username-password login (SOAP), as simple-salesforce does by default."""

    method: Literal["password"]
    username: Setting
    password: Secret
    security_token: Secret | None = None
    """Needed unless the worker's IP range is trusted by the org."""
    client_id: Setting | None = None
    """Optional client id / connected app consumer key sent with the login."""
    secret_fields: ClassVar[tuple[str, ...]] = ("password", "security_token")


class SalesforceOAuthPassword(_Auth):
    """OAuth 2.0 username-password flow through a connected app."""

    method: Literal["oauth_password"]
    client_id: Setting
    client_secret: Secret
    username: Setting
    password: Secret
    security_token: Secret | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("client_secret", "password", "security_token")


class SalesforceJwt(_Auth):
    """OAuth 2.0 JWT bearer flow: a connected app's consumer key and the matching private key."""

    method: Literal["jwt"]
    client_id: Setting
    username: Setting
    private_key: Secret
    """The PEM private key, usually {file: /run/secrets/sf-jwt.key}."""
    secret_fields: ClassVar[tuple[str, ...]] = ("private_key",)


class SalesforceClientCredentials(_Auth):
    """OAuth 2.0 client credentials flow (needs the org's My Domain)."""

    method: Literal["client_credentials"]
    client_id: Setting
    client_secret: Secret
    secret_fields: ClassVar[tuple[str, ...]] = ("client_secret",)


class SalesforceSession(_Auth):
    """An existing session id (e.g. from an SFDX login) and the instance it belongs to."""

    method: Literal["session"]
    session_id: Secret
    instance_url: HttpsUrl
    secret_fields: ClassVar[tuple[str, ...]] = ("session_id",)


SalesforceAuth = _tagged(
    "method",
    {
        "password": SalesforcePassword,
        "oauth_password": SalesforceOAuthPassword,
        "jwt": SalesforceJwt,
        "client_credentials": SalesforceClientCredentials,
        "session": SalesforceSession,
    },
    "Salesforce auth method",
)


class HubSpotPrivateApp(_Auth):
    """A private app's access token."""

    method: Literal["private_app"]
    token: Secret
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)


class HubSpotOAuth(_Auth):
    """OAuth: an access token, or client id/secret and refresh token to obtain one (or both)."""

    method: Literal["oauth"]
    access_token: Secret | None = None
    client_id: Setting | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("access_token", "client_secret", "refresh_token")

    @model_validator(mode="after")
    def _check_complete(self) -> HubSpotOAuth:
        refresh = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }
        given = [k for k, v in refresh.items() if v is not None]
        if self.access_token is None and not given:
            raise _rule(
                "give access_token, or client_id, client_secret and refresh_token (to refresh"
                " the access token), or both"
            )
        if given and len(given) < len(refresh):
            missing = [k for k in refresh if k not in given]
            raise _rule(
                f"refreshing the access token needs client_id, client_secret and refresh_token;"
                f" missing: {', '.join(missing)}"
            )
        return self


HubSpotAuth = _tagged(
    "method",
    {"private_app": HubSpotPrivateApp, "oauth": HubSpotOAuth},
    "HubSpot auth method",
)


# ---------------------------------------------------------------------------------------------
# Mapping


class StageMap(ConfigModel):
    """One CRM stage value and what it means."""

    crm: CrmValue
    """The CRM's value: Salesforce StageName (e.g. "Closed Won"), HubSpot stage id."""
    stage: StageKey
    """Canonical stage key, e.g. 'demo' or 'closed_won'."""
    order: int
    """Funnel position: later stages have larger numbers."""
    won: bool = False
    lost: bool = False
    probability: Fraction | None = None
    """Win probability 0..1 for weighted pipeline; the CRM's when absent."""
    forecast_category: ForecastCategory | None = None
    """Used when a deal in this stage has no forecast category of its own."""

    @model_validator(mode="after")
    def _won_xor_lost(self) -> StageMap:
        if self.won and self.lost:
            _raise_all(
                "stage",
                [
                    _at(
                        ("won",),
                        "a stage cannot be both won and lost; set won: true for a Closed Won"
                        " stage, lost: true for a Closed Lost stage, neither for open stages",
                    )
                ],
            )
        return self

    @property
    def closed(self) -> bool:
        return self.won or self.lost


def _unique_items(key: str, what: str) -> WrapValidator:
    """Report items of a list sharing ``key``, on the raw input, alongside the items' own errors.

    Checking the raw input (not only the validated list) means a duplicate is reported even when
    another item has an unrelated mistake, so one run of `config validate` shows everything.
    """

    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        duplicates: list[InitErrorDetails] = []
        if isinstance(value, list):
            seen: dict[object, int] = {}
            for index, item in enumerate(value):
                raw = item.get(key) if isinstance(item, dict) else getattr(item, key, None)
                if raw is None or not isinstance(raw, str | int):
                    continue
                if raw in seen:
                    duplicates.append(
                        _at(
                            (index, key),
                            f"duplicate {what} {raw!r}: already used by item {seen[raw]}"
                            f" of this list; each {what} must be unique",
                        )
                    )
                else:
                    seen[raw] = index
        try:
            result = handler(value)
        except ValidationError as exc:
            if not duplicates:
                raise
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                    loc=e["loc"],
                    input=e["input"],
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(what, errors + duplicates) from None
        _raise_all(what, duplicates)
        return result

    return WrapValidator(validate)


class DealTypeMapping(ConfigModel):
    """CRM type values -> canonical deal types."""

    values: dict[CrmValue, DealType] = Field(default_factory=dict)
    """CRM type value -> new_business | expansion | renewal | other."""
    default: DealType = DealType.OTHER
    """For a value not listed (and for an empty type)."""
    quota_credited: list[DealType] = Field(
        default_factory=lambda: [DealType.NEW_BUSINESS, DealType.EXPANSION], min_length=1
    )
    """Types whose won ARR counts as bookings against quota."""

    @field_validator("quota_credited")
    @classmethod
    def _unique(cls, value: list[DealType]) -> list[DealType]:
        if len(set(value)) != len(value):
            raise _rule("each deal type may be listed once")
        return value

    def map(self, crm_value: str | None) -> DealType:
        return self.values.get(crm_value, self.default) if crm_value else self.default


class ForecastCategoryMapping(ConfigModel):
    """CRM forecast category values -> canonical forecast categories."""

    values: dict[CrmValue, ForecastCategory] = Field(default_factory=dict)
    default: ForecastCategory = ForecastCategory.PIPELINE
    """For a value not listed; 'pipeline' never counts towards commit or best case."""

    def map(self, crm_value: str | None) -> ForecastCategory:
        return self.values.get(crm_value, self.default) if crm_value else self.default


_SF_FORECAST_DEFAULTS = {
    "Pipeline": ForecastCategory.PIPELINE,
    "Best Case": ForecastCategory.BEST_CASE,
    "Commit": ForecastCategory.COMMIT,
    "Closed": ForecastCategory.CLOSED,
    "Omitted": ForecastCategory.OMITTED,
}
_HS_FORECAST_DEFAULTS = {
    "PIPELINE": ForecastCategory.PIPELINE,
    "BEST_CASE": ForecastCategory.BEST_CASE,
    "COMMIT": ForecastCategory.COMMIT,
    "CLOSED": ForecastCategory.CLOSED,
    "OMIT": ForecastCategory.OMITTED,
}


def _quota_source_shape(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("crm", "config"):
            return {"kind": value}
        raise _rule(
            f"unknown quota source {value!r}; expected 'crm', 'config' or {{csv: path}}"
            + _suggest(value, ("crm", "config"))
        )
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "csv", **value}
    return value


class QuotaSourceSetting(ConfigModel):
    """``crm`` (Salesforce ForecastingQuota / HubSpot goals), ``config`` (the quotas section)
    or ``{csv: path}`` (a CSV file for this source)."""

    kind: Literal["crm", "config", "csv"]
    csv: ConfigPath | None = None

    @model_validator(mode="after")
    def _csv_given(self) -> QuotaSourceSetting:
        if (self.kind == "csv") != (self.csv is not None):
            raise _rule(
                "write quota_source: crm, quota_source: config or quota_source: {csv: path}"
            )
        return self


class AeFilter(ConfigModel):
    """Which users are Account Executives: those whose ``field`` holds one of ``values``."""

    field: NonEmptyText
    values: list[CrmValue] = Field(min_length=1)


class _MappingBase(ConfigModel):
    amount_is: Literal["arr", "mrr", "tcv"] = "arr"
    """What the amount field holds: ARR as is, MRR (x12) or TCV (/ contract years)."""
    stages: Annotated[list[StageMap], _unique_items("crm", "CRM stage value")] = Field(min_length=1)
    """Every CRM stage value and its canonical stage; a value not listed is bad data."""
    # Plain text: _stage_exists checks them against the stage list, with better hints.
    qualified_stage: str
    """Canonical stage from which a deal counts as qualified (pipeline velocity)."""
    conversion_entry_stage: str = Field("demo", validate_default=True)
    """Canonical stage whose entry starts conversion_rate (default 'demo')."""
    cycle_start_stage: str | None = None
    """Canonical stage whose first entry starts the sales cycle (default: creation)."""
    deal_types: DealTypeMapping = Field(default_factory=DealTypeMapping)
    quota_source: Annotated[QuotaSourceSetting, BeforeValidator(_quota_source_shape)] = Field(
        default_factory=lambda: QuotaSourceSetting(kind="crm")
    )
    """Where quotas come from: crm, config, or {csv: path}."""
    ae_filter: AeFilter | None = None
    """Which users are AEs (default: the reps listed in teams, else every deal owner)."""

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, stages: list[StageMap]) -> list[StageMap]:
        problems: list[InitErrorDetails] = []
        first_of_key: dict[str, int] = {}
        key_of_order: dict[int, str] = {}
        for index, entry in enumerate(stages):
            if entry.stage in first_of_key:
                first = stages[first_of_key[entry.stage]]
                same = ("order", "won", "lost", "probability", "forecast_category")
                for name in same:
                    if getattr(entry, name) != getattr(first, name):
                        problems.append(
                            _at(
                                (index, name),
                                f"stage '{entry.stage}' is also mapped by stages"
                                f"[{first_of_key[entry.stage]}] with a different {name};"
                                " CRM values sharing a canonical stage must agree",
                            )
                        )
                continue
            first_of_key[entry.stage] = index
            other = key_of_order.get(entry.order)
            if other is not None:
                problems.append(
                    _at(
                        (index, "order"),
                        f"order {entry.order} is already the position of stage '{other}'; each"
                        " canonical stage needs its own funnel position",
                    )
                )
            key_of_order.setdefault(entry.order, entry.stage)
        if not any(s.won for s in stages):
            problems.append(_at((), "no stage has won: true; map the CRM's Closed Won stage(s)"))
        if not any(s.lost for s in stages):
            problems.append(_at((), "no stage has lost: true; map the CRM's Closed Lost stage(s)"))
        _raise_all("stages", problems)
        return stages

    @field_validator("qualified_stage", "conversion_entry_stage", "cycle_start_stage")
    @classmethod
    def _stage_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        stages: list[StageMap] | None = info.data.get("stages")
        if value is None or stages is None:  # stages invalid: reported on their own
            return value
        by_key = {s.stage: s for s in stages}
        if value not in by_key:
            crm = next((s for s in stages if s.crm == value), None)
            hint = (
                f"; '{value}' is a CRM value: use its canonical key '{crm.stage}'"
                if crm
                else _suggest(value, by_key)
            )
            default = (
                " (the default)"
                if info.field_name == "conversion_entry_stage" and value == "demo"
                else ""
            )
            raise _rule(
                f"{info.field_name} '{value}'{default} is not a mapped stage; expected one of"
                f" the canonical stages: {_quoted(dict.fromkeys(s.stage for s in stages))}{hint}"
            )
        if by_key[value].closed:
            raise _rule(f"{info.field_name} must be an open stage, not the closed stage '{value}'")
        return value

    @functools.cached_property
    def _stages_by_crm_value(self) -> dict[str, StageMap]:
        return {s.crm: s for s in reversed(self.stages)}  # the first entry wins, as before

    def stage_for(self, crm_value: str) -> StageMap | None:
        """The mapping of a CRM stage value, or None (unmapped: bad data)."""
        return self._stages_by_crm_value.get(crm_value)

    def stage_order(self, key: str) -> int:
        return next(s.order for s in self.stages if s.stage == key)


class SalesforceDemoMapping(ConfigModel):
    """Which activities are demos: records of ``object`` whose ``type_field`` is in ``values``."""

    object: SalesforceObject = "Event"
    type_field: SalesforceField = "Type"
    values: list[CrmValue] = Field(min_length=1)
    owner_field: SalesforceField = "OwnerId"
    deal_field: SalesforceField = "WhatId"
    start_field: SalesforceField = "StartDateTime"


class SalesforceMapping(_MappingBase):
    """Opportunity fields (canonical name -> API name) and value mappings for Salesforce."""

    name: SalesforceField = "Name"
    amount: SalesforceField = "Amount"
    close_date: SalesforceField = "CloseDate"
    created_at: SalesforceField = "CreatedDate"
    stage: SalesforceField = "StageName"
    deal_type: SalesforceField | None = "Type"
    forecast_category: SalesforceField | None = "ForecastCategoryName"
    probability: SalesforceField | None = "Probability"
    currency: SalesforceField | None = "CurrencyIsoCode"
    """null in a single-currency org (deals are then in the org's currency)."""
    owner_id: SalesforceField = "OwnerId"
    account_id: SalesforceField | None = "AccountId"
    is_deleted: SalesforceField = "IsDeleted"
    last_modified: SalesforceField = "SystemModstamp"
    term_months: SalesforceField | None = None
    """Contract term in months (for amount_is: tcv); 12 when unmapped."""
    churn_date: SalesforceFieldPath | None = None
    """The account's churn date, e.g. 'Account.Churn_Date__c' (for retention_90d)."""
    team_field: SalesforceFieldPath | None = None
    """A User field holding the team name (instead of the config's teams section)."""
    forecast_categories: ForecastCategoryMapping = Field(
        default_factory=lambda: ForecastCategoryMapping(values=dict(_SF_FORECAST_DEFAULTS))
    )
    demos: SalesforceDemoMapping | None = None
    """Demo activities; demos_per_week stays empty without it."""


class HubSpotDemoMapping(ConfigModel):
    object: Literal["meetings", "calls", "tasks"] = "meetings"
    type_field: HubSpotProperty = "hs_activity_type"
    values: list[CrmValue] = Field(min_length=1)
    owner_field: HubSpotProperty = "hubspot_owner_id"
    start_field: HubSpotProperty = "hs_timestamp"


class HubSpotMapping(_MappingBase):
    """Deal properties (canonical name -> internal name) and value mappings for HubSpot.

    A deal's company comes from its primary company association, not from a property.
    """

    name: HubSpotProperty = "dealname"
    amount: HubSpotProperty = "amount"
    amount_in_home_currency: HubSpotProperty | None = "amount_in_home_currency"
    close_date: HubSpotProperty = "closedate"
    created_at: HubSpotProperty = "createdate"
    stage: HubSpotProperty = "dealstage"
    pipeline: HubSpotProperty = "pipeline"
    deal_type: HubSpotProperty | None = "dealtype"
    forecast_category: HubSpotProperty | None = "hs_forecast_category"
    probability: HubSpotProperty | None = "hs_deal_stage_probability"
    currency: HubSpotProperty | None = "deal_currency_code"
    owner_id: HubSpotProperty = "hubspot_owner_id"
    last_modified: HubSpotProperty = "hs_lastmodifieddate"
    term_months: HubSpotProperty | None = None
    churn_date: HubSpotProperty | None = None
    """A company property holding the churn date."""
    team_field: HubSpotProperty | None = None
    pipelines: list[CrmValue] | None = None
    """Pipeline ids to pull (default: all)."""
    company_id: HubSpotProperty | None = "hs_primary_associated_company"
    """Deal property holding the id of the deal's primary company (its account)."""
    close_date_history: bool = False
    """Read each pulled deal's close-date history (for close_date_slips) through batch read
    with propertiesWithHistory. HubSpot answers at most 50 deals a call there, so this costs
    about four calls more per 200 deals pulled; off, slips are 0 (KPIS.md: where none is
    kept). Search cannot return property history."""
    quota_goals: list[NonEmptyText] | None = None
    """Names (hs_goal_name) of the goals whose targets are quotas, with quota_source: crm
    (default: every goal target assigned to an owner)."""
    forecast_categories: ForecastCategoryMapping = Field(
        default_factory=lambda: ForecastCategoryMapping(values=dict(_HS_FORECAST_DEFAULTS))
    )
    demos: HubSpotDemoMapping | None = None


# ---------------------------------------------------------------------------------------------
# KPI target fields

_SCORECARD_COLUMNS: dict[str, dict[str, str]] = {
    "salesforce": {
        "rep_field": "Rep__c",
        "team_field": "Team__c",
        "period_type_field": "Period_Type__c",
        "period_start_field": "Period_Start__c",
        "period_end_field": "Period_End__c",
        "computed_at_field": "Computed_At__c",
    },
    "hubspot": {
        "rep_field": "hubspot_owner_id",
        "team_field": "kpi_team",
        "period_type_field": "kpi_period_type",
        "period_start_field": "kpi_period_start",
        "period_end_field": "kpi_period_end",
        "computed_at_field": "kpi_computed_at",
    },
}


def _kpi_key_problems(fields: Mapping[str, str], valid: tuple[str, ...], target: str) -> None:
    problems: list[InitErrorDetails] = []
    for key in fields:
        if key in valid:
            continue
        if key in DEAL_KPIS or key in SCORECARD_KPIS:
            where = "kpi_fields.deal" if key in DEAL_KPIS else "kpi_fields.scorecard or .rep"
            message = f"'{key}' is not a {target} KPI; it belongs under {where}"
        else:
            message = (
                f"unknown KPI key '{key}'{_suggest(key, valid, ' (did you mean {!r}?)')};"
                f" valid {target} KPI keys: {', '.join(valid)}"
            )
        problems.append(_at((key,), message))
    _raise_all("fields", problems)


class _Target(ConfigModel):
    kpis: ClassVar[tuple[str, ...]] = ()
    fields: dict[str, NonEmptyText] = Field(default_factory=dict)
    """KPI key -> CRM field name."""

    @field_validator("fields")
    @classmethod
    def _known_keys(cls, value: dict[str, str]) -> dict[str, str]:
        _kpi_key_problems(value, cls.kpis, cls.__name__.removesuffix("Target").lower())
        return value


class ScorecardTarget(_Target):
    """A custom object with one record per rep (or team) and period, upserted by external id.

    The ``*_field`` columns default, per CRM, to the names in :meth:`columns`.
    """

    kpis: ClassVar[tuple[str, ...]] = SCORECARD_KPIS
    object: NonEmptyText
    """Salesforce custom object (KPI_Scorecard__c) or HubSpot custom object type."""
    external_id: NonEmptyText
    """Unique external id field used to upsert, e.g. Scorecard_Key__c."""
    rep_field: NonEmptyText | None = None
    team_field: NonEmptyText | None = None
    period_type_field: NonEmptyText | None = None
    period_start_field: NonEmptyText | None = None
    period_end_field: NonEmptyText | None = None
    computed_at_field: NonEmptyText | None = None

    def columns(self, crm: CrmType) -> dict[str, str]:
        """Effective dimension columns: ``{"rep_field": "Rep__c", ...}``."""
        return {
            name: getattr(self, name) or default
            for name, default in _SCORECARD_COLUMNS[crm].items()
        }


class DealTarget(_Target):
    """Fields on the Opportunity (Salesforce) or deal (HubSpot)."""

    kpis: ClassVar[tuple[str, ...]] = DEAL_KPIS
    period: PeriodKind = "quarter"
    """Period of owner_quota_attainment (the current one)."""
    daily_ages: bool = False
    """deal_age_days and days_in_stage grow by one every day. By default the worker writes the
    date they count from (creation, entry into the current stage) into their field, a Date
    field, and a CRM formula (TODAY() - field) shows the days: no daily rewrite of every open
    deal. True writes the day counts themselves (a daily write of every open deal)."""


class RepTarget(_Target):
    """Fields on the User record (Salesforce only), holding the current period's values."""

    kpis: ClassVar[tuple[str, ...]] = REP_KPIS
    period: PeriodKind = "quarter"


class OwnerTarget(_Target):
    """The owner's current-period KPIs stamped on each of the owner's open deals, for
    portals without custom objects (HubSpot Starter) or teams that want them on the deal.
    Closed deals get the fields emptied once. Each change of an owner's values rewrites
    that owner's open deals."""

    kpis: ClassVar[tuple[str, ...]] = REP_KPIS
    period: PeriodKind = "quarter"


class KpiFields(ConfigModel):
    """Which KPI goes to which CRM field."""

    scorecard: ScorecardTarget | None = None
    deal: DealTarget | None = None
    rep: RepTarget | None = None
    owner: OwnerTarget | None = None

    def count(self) -> int:
        return sum(
            len(t.fields)
            for t in (self.scorecard, self.deal, self.rep, self.owner)
            if t is not None
        )

    @property
    def writes_nothing(self) -> bool:
        """No target at all (no ``kpi_fields``, or an empty one): the source runs
        compute-only."""
        return all(t is None for t in (self.scorecard, self.deal, self.rep, self.owner))

    def problems(self, crm: CrmType) -> list[tuple[tuple[str | int, ...], str]]:
        """Names invalid for ``crm`` and fields written twice, as (path, message)."""
        check = _check_sf_custom_name if crm == "salesforce" else _check_hs_name
        out: list[tuple[tuple[str | int, ...], str]] = []
        if self.rep is not None and crm == "hubspot":
            out.append(
                (
                    ("rep",),
                    "HubSpot owners have no custom properties; write per-rep values to the"
                    " scorecard object or deal.owner_quota_attainment",
                )
            )
        if self.scorecard is not None:
            card = self.scorecard
            if (why := check(card.object, "object")) is not None:
                out.append((("scorecard", "object"), why))
            named = {"external_id": card.external_id, **card.columns(crm)}
            explicit = {"external_id", *(n for n in named if getattr(card, n, None))}
            for name, value in named.items():
                if name in explicit and (why := check(value, "field")) is not None:
                    out.append((("scorecard", name), why))
            out += _field_problems(card.fields, check, ("scorecard",), set(named.values()))
        for target_name in ("deal", "rep"):
            target = getattr(self, target_name)
            if target is not None:
                out += _field_problems(target.fields, check, (target_name,), set())
        if self.owner is not None:
            # Written on deals too: no field may also be a deal field.
            taken = set(self.deal.fields.values()) if self.deal is not None else set()
            for loc, message in _field_problems(self.owner.fields, check, ("owner",), taken):
                out.append((loc, message.replace("a key column of the scorecard", "a deal field")))
        return out


def _field_problems(
    fields: Mapping[str, str],
    check: Callable[[str, str], str | None],
    prefix: tuple[str, ...],
    reserved: set[str],
) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    writer_of: dict[str, str] = {}
    for key, name in fields.items():
        loc = (*prefix, "fields", key)
        if (why := check(name, "field")) is not None:
            out.append((loc, why))
        elif name.lower() in {r.lower() for r in reserved}:
            out.append((loc, f"field '{name}' is already a key column of the scorecard"))
        elif name.lower() in writer_of:
            out.append(
                (
                    loc,
                    f"field '{name}' already receives '{writer_of[name.lower()]}';"
                    " one KPI per field",
                )
            )
        writer_of.setdefault(name.lower(), key)
    return out


# ---------------------------------------------------------------------------------------------
# Sources

_SF_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")


def _check_sf_domain(value: str) -> str:
    value = value.lower()
    if "://" in value or "/" in value:
        raise _rule(
            "domain is the part before '.salesforce.com', e.g. 'acme.my' for"
            " https://acme.my.salesforce.com ('login' for production, 'test' for sandboxes);"
            " to send logins elsewhere use login_url"
        )
    if value.endswith(".salesforce.com"):
        raise _rule(
            f"drop '.salesforce.com': write domain: {value.removesuffix('.salesforce.com')}"
        )
    if not _SF_DOMAIN.match(value):
        raise _rule("expected 'login', 'test' or a My Domain such as 'acme.my'")
    return value


def _api_version(value: Any) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{float(value):.1f}"
    return value


def _check_api_version(value: str) -> str:
    if not re.match(r"^[1-9][0-9]\.0$", value):
        hint = " (without 'v')" if value.lower().startswith("v") else ""
        raise _rule(f"expected a Salesforce API version such as '59.0'{hint}")
    return value


class _SourceBase(ConfigModel):
    name: SourceName
    """Unique name of this source (used in state keys, logs and reports)."""
    ca_bundle: ConfigPath | None = None
    """PEM file of CA certificates to trust (corporate TLS proxy, the sandbox)."""
    timeout_seconds: Timeout = 30.0
    kpi_fields: KpiFields | None = None
    """Overrides the top-level kpi_fields for this source."""

    crm: ClassVar[CrmType]

    def _default_secret_problems(self, endpoint: str | None) -> list[InitErrorDetails]:
        auth = self.auth  # type: ignore[attr-defined]
        if _url_is_loopback(endpoint):
            return []
        problems = []
        for name in auth.secret_fields:
            ref = getattr(auth, name)
            if isinstance(ref, EnvRef) and ref.default is not None:
                problems.append(
                    _at(
                        ("auth", name, "default"),
                        "a default for a secret is accepted only when the CRM endpoint is a"
                        " loopback host (the sandbox CRM); give a real secret through the"
                        f" environment variable {ref.env} or a file",
                    )
                )
        return problems

    def with_changes(self, **changes: Any) -> Any:
        """A re-validated copy with some settings changed, e.g. ``base_url`` pointed at a
        sandbox (``model_copy`` would skip the rules, such as the loopback-default one)."""
        return type(self).model_validate({**dict(self), **changes})

    def _kpi_field_problems(self) -> list[InitErrorDetails]:
        if self.kpi_fields is None:
            return []
        return [_at(("kpi_fields", *loc), msg) for loc, msg in self.kpi_fields.problems(self.crm)]


class SalesforceSource(_SourceBase):
    """A Salesforce org, reached through simple-salesforce."""

    crm: ClassVar[CrmType] = "salesforce"
    type: Literal["salesforce"]
    auth: SalesforceAuth
    domain: Annotated[str, AfterValidator(_check_sf_domain)] = "login"
    """'login' (production), 'test' (sandboxes) or a My Domain such as 'acme.my'."""
    instance_url: HttpsUrl | None = None
    """Instance to call instead of the one login returns."""
    login_url: HttpsUrl | None = None
    """Where login requests are sent instead of https://{domain}.salesforce.com."""
    api_version: Annotated[
        str, BeforeValidator(_api_version), AfterValidator(_check_api_version)
    ] = "59.0"
    page_size: Annotated[int, Field(ge=200, le=2000)] = 2000
    """Records per query page (Salesforce accepts 200..2000)."""
    mapping: SalesforceMapping

    @property
    def is_my_domain(self) -> bool:
        return self.domain not in ("login", "test")

    @property
    def effective_instance_url(self) -> str | None:
        """The instance to call, when known before login."""
        if self.instance_url is not None:
            return self.instance_url
        auth = self.auth
        return auth.instance_url if isinstance(auth, SalesforceSession) else None

    @property
    def secret_endpoint(self) -> str | None:
        """The URL the source's credentials are sent to (login_url, or the instance)."""
        if isinstance(self.auth, SalesforceSession):
            return self.effective_instance_url
        return self.login_url

    @model_validator(mode="after")
    def _cross_checks(self) -> SalesforceSource:
        problems: list[InitErrorDetails] = []
        if isinstance(self.auth, SalesforceClientCredentials) and not self.is_my_domain:
            problems.append(
                _at(
                    ("auth", "method"),
                    "auth method 'client_credentials' needs the org's My Domain: set domain to"
                    f" e.g. 'acme.my', not '{self.domain}'",
                )
            )
        if (
            isinstance(self.auth, SalesforceSession)
            and self.instance_url is not None
            and self.instance_url != self.auth.instance_url
        ):
            problems.append(
                _at(
                    ("instance_url",),
                    "instance_url differs from auth.instance_url; a session belongs to one"
                    " instance: give it once, in auth",
                )
            )
        problems += self._default_secret_problems(self.secret_endpoint)
        problems += self._kpi_field_problems()
        _raise_all("salesforce source", problems)
        return self

    def with_endpoints(
        self,
        *,
        login_url: str | None = None,
        instance_url: str | None = None,
        ca_bundle: Path | None = None,
    ) -> SalesforceSource:
        """A copy pointed elsewhere (e.g. the demo's sandbox port), re-validated."""
        changes = {"login_url": login_url, "instance_url": instance_url, "ca_bundle": ca_bundle}
        result: SalesforceSource = self.with_changes(
            **{k: v for k, v in changes.items() if v is not None}
        )
        return result


class HubSpotRateLimits(ConfigModel):
    """Client-side pacing, so the worker stays under the portal's limits instead of meeting
    429s. HubSpot's search endpoints take 5 requests a second per portal; other endpoints
    100 (Free/Starter) to 190 (Professional/Enterprise) per 10 seconds, the portal's rate
    headers telling which (the worker follows X-HubSpot-RateLimit-Max when it is lower)."""

    search_per_second: Annotated[float, Field(gt=0, le=100)] = 5.0
    per_10_seconds: Annotated[int, Field(ge=1, le=10_000)] = 100


class HubSpotSource(_SourceBase):
    """A HubSpot portal, reached through hubspot-api-client."""

    crm: ClassVar[CrmType] = "hubspot"
    type: Literal["hubspot"]
    auth: HubSpotAuth
    base_url: ApiUrl = "https://api.hubapi.com"
    page_size: Annotated[int, Field(ge=10, le=200)] = 200
    """Records per search page (HubSpot's search answers at most 200; list endpoints, used
    for owners and archived deals, at most 100, so they take min(page_size, 100))."""
    rate_limits: HubSpotRateLimits = Field(default_factory=lambda: HubSpotRateLimits())
    """How fast the worker calls the portal; it also slows down on HubSpot's rate headers and
    429 answers."""
    mapping: HubSpotMapping

    @model_validator(mode="after")
    def _cross_checks(self) -> HubSpotSource:
        problems = self._default_secret_problems(self.base_url)
        problems += self._kpi_field_problems()
        _raise_all("hubspot source", problems)
        return self


Source = _tagged("type", {"salesforce": SalesforceSource, "hubspot": HubSpotSource}, "source type")


# ---------------------------------------------------------------------------------------------
# Calendar, money, teams, quotas, pay

_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


class FiscalCalendar(ConfigModel):
    year_start_month: Annotated[int, Field(ge=1, le=12)] = 1
    """First month of the fiscal year (1 = January)."""
    year_named_by: Literal["start", "end"] = "start"
    """Whether fiscal year N is the one starting or ending in calendar year N."""
    timezone: TimezoneName = "UTC"
    """IANA timezone in which dates are compared, e.g. Europe/Paris."""
    periods: list[PeriodKind] = Field(default_factory=lambda: [*_ALL_PERIODS], min_length=1)
    snapshot_day: Annotated[int, Field(ge=1, le=28)] = 15
    """Day of each period on which the commit forecast is stored (forecast_accuracy)."""
    trailing_window_days: Annotated[int, Field(ge=7, le=3660)] = 180
    """Window ending at as_of for pipeline velocity's rates."""

    @field_validator("periods")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise _rule("each period kind may be listed once")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def fiscal_year_start(self, fiscal_year: int) -> dt.date:
        year = fiscal_year
        if self.year_named_by == "end" and self.year_start_month != 1:
            year -= 1
        return dt.date(year, self.year_start_month, 1)

    def period_bounds(self, label: str) -> tuple[dt.date, dt.date]:
        """First and last day (inclusive) of ``2026`` (fiscal year), ``2026-Q3`` (fiscal
        quarter) or ``2026-07`` (calendar month)."""
        match = _PERIOD.match(label)
        if match is None:
            raise ValueError(f"not a period label: {label!r}")
        year = int(match["year"])
        if match["month"]:
            start = dt.date(year, int(match["month"]), 1)
            months = 1
        elif match["quarter"]:
            start = _add_months(self.fiscal_year_start(year), 3 * (int(match["quarter"]) - 1))
            months = 3
        else:
            start = self.fiscal_year_start(year)
            months = 12
        return start, _add_months(start, months) - dt.timedelta(days=1)

    def describe(self) -> str:
        return (
            f"fiscal year starts in {_MONTH_NAMES[self.year_start_month - 1]}, timezone"
            f" {self.timezone}, periods {', '.join(self.periods)}"
        )


_PERIOD = re.compile(r"^(?P<year>\d{4})(?:-Q(?P<quarter>[1-4])|-(?P<month>0[1-9]|1[0-2]))?$")


class CurrencySettings(ConfigModel):
    reporting: CurrencyCode
    """Currency of every KPI, quota and target, e.g. EUR."""
    conversion: Literal["crm", "static"] = "crm"
    """'crm': the CRM's own rates; 'static': the rates below."""
    rates: dict[CurrencyCode, PositiveDecimal] = Field(default_factory=dict)
    """Units of each currency per 1 unit of the reporting currency (static conversion)."""

    @model_validator(mode="after")
    def _check_rates(self) -> CurrencySettings:
        problems: list[InitErrorDetails] = []
        if self.conversion == "static" and not self.rates:
            problems.append(_at(("rates",), "conversion 'static' needs rates, e.g. {USD: 1.08}"))
        if self.conversion == "crm" and self.rates:
            problems.append(
                _at(("rates",), "rates are used only with conversion: static; remove them")
            )
        own = self.rates.get(self.reporting)
        if own is not None and own != 1:
            problems.append(
                _at(("rates", self.reporting), "the reporting currency's own rate must be 1")
            )
        _raise_all("currency", problems)
        return self


def _period_label(value: Any) -> Any:
    if isinstance(value, dt.date):
        raise _rule(
            "a period is written 2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07"
            " (month); for explicit dates use start and end"
        )
    value = _text_from_scalar(value)
    if isinstance(value, str):
        value = value.strip().upper()
        if not _PERIOD.match(value):
            raise _rule(
                "expected a period such as 2026 (fiscal year), 2026-Q3 (fiscal quarter) or"
                " 2026-07 (month)"
            )
    return value


class QuotaEntry(ConfigModel):
    """A rep's quota for a period, in the reporting currency."""

    rep: Email
    period: Annotated[str, BeforeValidator(_period_label)] | None = None
    """2026 (fiscal year), 2026-Q3 (fiscal quarter) or 2026-07 (month)."""
    start: dt.date | None = None
    end: dt.date | None = None
    """Last day of the period (inclusive)."""
    amount: Money

    @model_validator(mode="after")
    def _one_period(self) -> QuotaEntry:
        if self.period is not None and (self.start is not None or self.end is not None):
            raise _rule("give either period or start and end, not both")
        if self.period is None:
            if self.start is None or self.end is None:
                raise _rule("give period (e.g. 2026-Q3) or both start and end dates")
            if self.end < self.start:
                _raise_all("quota", [_at(("end",), "end is before start (end is the last day)")])
        return self

    def bounds(self, fiscal: FiscalCalendar) -> tuple[dt.date, dt.date]:
        """First and last day (inclusive)."""
        if self.period is not None:
            return fiscal.period_bounds(self.period)
        assert self.start is not None and self.end is not None
        return self.start, self.end


class RampSettings(ConfigModel):
    prorate: bool = False
    """Prorate the quota of a rep who started inside a period by the days worked."""


class QuotaSettings(ConfigModel):
    entries: list[QuotaEntry] = Field(default_factory=list)
    csv: ConfigPath | None = None
    """CSV with columns rep,period,start,end,amount (see config_loader.read_quota_csv)."""
    ramp: RampSettings = Field(default_factory=RampSettings)

    @property
    def configured(self) -> bool:
        return bool(self.entries) or self.csv is not None


class PayoutCurve(ConfigModel):
    """payout(attainment) as a multiple of the target: linear up to ``accelerator_from``,
    then ``accelerator`` x the attainment above it, never above ``cap``."""

    accelerator_from: PositiveDecimal = Decimal("1.0")
    accelerator: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal("1.5")
    cap: PositiveDecimal = Decimal("2.0")

    @model_validator(mode="after")
    def _cap_above_linear(self) -> PayoutCurve:
        if self.cap < self.accelerator_from:
            _raise_all(
                "curve",
                [_at(("cap",), "cap must be at least accelerator_from (the linear part's end)")],
            )
        return self


class VariablePay(ConfigModel):
    target: Money | None = None
    """Default variable pay target per rep and year, in the reporting currency."""
    targets: dict[Email, Money] = Field(default_factory=dict)
    """Per-rep targets (rep email -> amount), overriding target."""
    curve: PayoutCurve = Field(default_factory=PayoutCurve)

    @model_validator(mode="after")
    def _some_target(self) -> VariablePay:
        if self.target is None and not self.targets:
            raise _rule("give a default target, per-rep targets, or both")
        return self

    def target_for(self, email: str) -> Decimal | None:
        return self.targets.get(email.lower(), self.target)


# ---------------------------------------------------------------------------------------------
# Write, store, schedule, runtime


class WriteSettings(ConfigModel):
    batch_size: Annotated[int, Field(ge=1, le=200)] = 200
    """Records per write call, at most; HubSpot batches are further capped at 100."""
    dry_run: bool = False
    """Compute and print the diff, write nothing."""
    language: Literal["en", "fr"] = "en"
    """Language of field labels and help texts."""

    def batch_size_for(self, crm: CrmType) -> int:
        return min(self.batch_size, 200 if crm == "salesforce" else 100)


_STORE_SCHEMES = re.compile(r"^(sqlite|postgresql)(\+[a-z0-9_]+)?$")


def _is_store_url(value: str) -> bool:
    scheme, sep, _ = value.partition("://")
    return bool(sep) and _STORE_SCHEMES.match(scheme) is not None


def _check_store_url(value: str) -> str:
    _not_interpolation(value)
    scheme, _, rest = value.partition("://")
    if not _is_store_url(value):
        hint = " (use postgresql://)" if scheme in ("postgres", "pg") else ""
        raise _rule(
            "expected an SQLAlchemy URL: sqlite:///path/to/file.sqlite or"
            f" postgresql://user@host/db{hint}"
        )
    if scheme.startswith("postgresql"):
        netloc = rest.split("/", 1)[0]
        if ":" in netloc.rpartition("@")[0]:
            raise _rule(
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
            raise _rule("give url or url_env, not both")
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
        raise _rule(
            f"invalid cron expression: {exc}; expected 5 fields 'minute hour day-of-month"
            " month day-of-week', e.g. '0 6 * * 1-5' (06:00 Monday to Friday)"
        ) from None
    return " ".join(value.split())


class Schedule(ConfigModel):
    cron: Annotated[str, AfterValidator(_check_cron)] | None = None
    """Standard 5-field crontab expression (day of week 0/7 = Sunday)."""
    every_minutes: Annotated[int, Field(ge=1, le=1440)] | None = None
    timezone: TimezoneName | None = None
    """Timezone of the cron expression (default: the fiscal timezone)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.every_minutes is None):
            raise _rule("give either cron (e.g. '0 6 * * *') or every_minutes, exactly one")
        if self.timezone is not None and self.every_minutes is not None:
            _raise_all("schedule", [_at(("timezone",), "timezone applies only to cron schedules")])
        return self

    def trigger(self, default_timezone: str) -> Any:
        """The APScheduler trigger: cron in ``timezone`` (else ``default_timezone``, the fiscal
        one), or a fixed interval."""
        if self.cron is not None:
            return cron_trigger(self.cron, self.timezone or default_timezone)
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(minutes=self.every_minutes, timezone=ZoneInfo(default_timezone))

    def describe(self, default_timezone: str) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone or default_timezone})"
        return f"every {self.every_minutes} minute{'s' if self.every_minutes != 1 else ''}"


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class RuntimeSettings(ConfigModel):
    as_of: AwareDatetime | None = None
    """Pin the evaluation instant (backfills, tests); default: now."""
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"


# ---------------------------------------------------------------------------------------------
# The whole file


class AppConfig(ConfigModel):
    """The whole config file."""

    version: Literal[1] = 1
    """Schema version of this file."""
    sources: Annotated[list[Source], _unique_items("name", "source name")] = Field(min_length=1)
    """The CRMs to read from and write to."""
    fiscal: FiscalCalendar = Field(default_factory=FiscalCalendar)
    currency: CurrencySettings
    """Reporting currency and conversion."""
    teams: dict[NonEmptyText, list[Email]] = Field(default_factory=dict)
    """Team name -> rep emails (a rep belongs to one team)."""
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    variable_pay: VariablePay | None = None
    kpi_fields: KpiFields | None = None
    """Which KPI is written to which CRM field (per-source kpi_fields override it)."""
    write: WriteSettings = Field(default_factory=WriteSettings)
    store: StoreSettings = Field(default_factory=StoreSettings, validate_default=True)
    schedule: Schedule | None = None
    """When to run; without it the worker runs once per command."""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    #: Where the loader read this config (``config_loader.ConfigOrigin``: the file and every
    #: key's line), so problems found later, against the CRM, still name file:line:key.
    _origin: Any = PrivateAttr(default=None)

    @field_validator("teams")
    @classmethod
    def _one_team_per_rep(cls, teams: dict[str, list[str]]) -> dict[str, list[str]]:
        problems: list[InitErrorDetails] = []
        team_of: dict[str, str] = {}
        for team, emails in teams.items():
            for index, email in enumerate(emails):
                if email in team_of:
                    where = "again in" if team_of[email] == team else f"in '{team_of[email]}' and"
                    problems.append(
                        _at(
                            (team, index),
                            f"{email} is listed {where} '{team}'; a rep belongs to one team",
                        )
                    )
                else:
                    team_of[email] = team
        _raise_all("teams", problems)
        return teams

    @field_validator("store")
    @classmethod
    def _store_beside_the_config(cls, store: StoreSettings, info: ValidationInfo) -> StoreSettings:
        # Also for the default store (validate_default): its file goes beside the config too.
        config_dir = _config_dir(info)
        if config_dir is not None:
            store = store.model_copy()
            store._config_dir = config_dir
        return store

    @model_validator(mode="after")
    def _cross_checks(self) -> AppConfig:
        problems: list[InitErrorDetails] = []
        for index, source in enumerate(self.sources):
            if self.teams and source.mapping.team_field is not None:
                problems.append(
                    _at(
                        ("sources", index, "mapping", "team_field"),
                        "teams are listed in the config and also read from team_field; keep"
                        " one of them",
                    )
                )
            if source.mapping.quota_source.kind == "config" and not self.quotas.configured:
                problems.append(
                    _at(
                        ("sources", index, "mapping", "quota_source"),
                        "quota_source is 'config' but the quotas section has no entries and no csv",
                    )
                )
        if self.quotas.configured and not any(
            s.mapping.quota_source.kind == "config" for s in self.sources
        ):
            problems.append(
                _at(
                    ("quotas",),
                    "the quotas section is unused: no source has quota_source: config",
                )
            )
        seen: dict[tuple[str, dt.date, dt.date], int] = {}
        for index, entry in enumerate(self.quotas.entries):
            key = (entry.rep, *entry.bounds(self.fiscal))
            if key in seen:
                problems.append(
                    _at(
                        ("quotas", "entries", index),
                        f"{entry.rep} already has a quota for {key[1]}..{key[2]}"
                        f" (entries[{seen[key]}])",
                    )
                )
            seen.setdefault(key, index)
        if self.kpi_fields is not None:
            crms = {s.crm for s in self.sources if s.kpi_fields is None}
            if len(crms) > 1:
                problems.append(
                    _at(
                        ("kpi_fields",),
                        "kpi_fields names fields of one CRM but sources of both types use it;"
                        " give each source its own kpi_fields",
                    )
                )
            for crm in sorted(crms):
                problems += [
                    _at(("kpi_fields", *loc), msg) for loc, msg in self.kpi_fields.problems(crm)
                ]
        for path, fields in self._kpi_targets():
            for target in ("deal", "rep"):
                chosen = getattr(fields, target)
                if chosen is not None and chosen.period not in self.fiscal.periods:
                    problems.append(
                        _at(
                            (*path, target, "period"),
                            f"period '{chosen.period}' is not computed; fiscal.periods lists"
                            f" {', '.join(self.fiscal.periods)}",
                        )
                    )
        _raise_all("config", problems)
        return self

    def _kpi_targets(self) -> Iterator[tuple[tuple[str | int, ...], KpiFields]]:
        if self.kpi_fields is not None:
            yield ("kpi_fields",), self.kpi_fields
        for index, source in enumerate(self.sources):
            if source.kpi_fields is not None:
                yield ("sources", index, "kpi_fields"), source.kpi_fields

    # Convenience accessors for the rest of the worker.

    def source(self, name: str) -> SalesforceSource | HubSpotSource:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"no source named {name!r}; sources: {[s.name for s in self.sources]}")

    def kpi_fields_for(self, source: SalesforceSource | HubSpotSource) -> KpiFields:
        """The source's own kpi_fields, else the top level's. Without either, an empty
        ``KpiFields()``: the source runs compute-only (KPIs computed and stored, nothing
        written to the CRM, nothing for setup to create)."""
        if source.kpi_fields is not None:
            return source.kpi_fields
        return self.kpi_fields if self.kpi_fields is not None else KpiFields()

    def team_of(self, email: str) -> str | None:
        email = email.lower()
        return next((team for team, emails in self.teams.items() if email in emails), None)

    def replace_source(self, source: SalesforceSource | HubSpotSource) -> AppConfig:
        """A copy with the source of the same name replaced (e.g. pointed at the sandbox)."""
        self.source(source.name)  # KeyError when there is none
        sources = [source if s.name == source.name else s for s in self.sources]
        return self.model_copy(update={"sources": sources})
