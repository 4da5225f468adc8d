"""The config's foundations: the base model, error helpers, value types, secrets, tagged unions.

Every part of the config tree (:mod:`crm_kpi_worker.sync.config`, and each CRM's own models in
``connectors/<crm>/config.py``) builds on this module. It imports nothing of the project, so a
connector can use it without loading the KPI engine. Rules of the tree:

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
- Cross-field rules live in validators, so building an ``AppConfig`` in code checks exactly
  what the loader checks. Union members are tagged ``type=...``, ``method=...`` or
  ``ref=...`` in pydantic's error locations; the loader drops those tags from the key paths
  (:class:`TaggedUnion` tells it which model each tag stands for).
- Relative paths (CA bundles, CSV files, secret files, the SQLite store's file) are resolved
  against the config file's folder when the loader passes ``context={"base_dir": folder}``
  (:func:`beside_config`).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

__all__ = [
    "RULE_ERROR",
    "UNION_TAG_KEYS",
    "ApiUrl",
    "AuthBase",
    "ConfigModel",
    "ConfigPath",
    "CrmValue",
    "CurrencyCode",
    "Email",
    "EnvRef",
    "EnvVarName",
    "FileEnvRef",
    "FileRef",
    "Fraction",
    "HttpsUrl",
    "Money",
    "NonEmptyText",
    "PositiveDecimal",
    "Secret",
    "SecretError",
    "SecretRef",
    "Setting",
    "SourceName",
    "StageKey",
    "TaggedUnion",
    "Timeout",
    "TimezoneName",
    "ValueRef",
    "beside_config",
    "checked_alongside",
    "config_dir_of",
    "did_you_mean",
    "error_at",
    "iter_secret_refs",
    "matching",
    "not_interpolation",
    "quoted",
    "raise_all",
    "rule",
    "text_from_scalar",
    "unique_items",
    "url_is_loopback",
]

#: pydantic error type of every rule the config checks itself.
RULE_ERROR = "config_rule"
#: Discriminator keys of the tagged unions; their tags appear in error locations as "key=value".
UNION_TAG_KEYS = ("type", "method", "ref")


# ---------------------------------------------------------------------------------------------
# Errors


def rule(message: str) -> PydanticCustomError:
    # No context: the message is used verbatim (braces such as "{env: VAR}" stay as written).
    return PydanticCustomError(RULE_ERROR, message)


def error_at(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    return InitErrorDetails(type=rule(message), loc=loc, input=None)


def raise_all(title: str, problems: list[InitErrorDetails]) -> None:
    """Raise every problem at once, each at its own location under the validated value."""
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def did_you_mean(value: object, choices: Iterable[str], form: str = "; did you mean '{}'?") -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return form.format(close[0]) if close else ""


def quoted(choices: Iterable[str]) -> str:
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


def not_interpolation(value: Any) -> Any:
    if isinstance(value, str) and "${" in value:
        raise rule(
            "'${...}' interpolation is not supported; read a value from the environment with"
            " {env: VAR_NAME}"
        )
    return value


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise rule(
            "expected an environment variable name (letters, digits and '_', not starting with"
            " a digit), e.g. CRM_KPI_SF_PASSWORD"
        )
    return value


def config_dir_of(info: ValidationInfo) -> Path | None:
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
    return beside_config(value, config_dir_of(info))


def matching(pattern: str, message: str) -> AfterValidator:
    """A validator refusing text that does not match ``pattern``, with ``message``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise rule(message)
        return value

    return AfterValidator(check)


def text_from_scalar(value: Any) -> Any:
    # YAML reads `1234567` and `2026` as integers; CRM values and periods are text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


EnvVarName = Annotated[str, AfterValidator(_check_env_name)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
NonEmptyText = Annotated[
    str, BeforeValidator(not_interpolation), Field(min_length=1, pattern=r"\S")
]
CrmValue = Annotated[
    str,
    BeforeValidator(text_from_scalar),
    BeforeValidator(not_interpolation),
    Field(min_length=1, max_length=255),
]
Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


def _check_fraction(value: Decimal) -> Decimal:
    if value > 1:
        raise rule(
            f"a probability is a fraction between 0 and 1; for {value}% write {value / 100}"
            if value <= 100
            else "a probability is a fraction between 0 and 1"
        )
    if value < 0:
        raise rule("a probability is a fraction between 0 and 1")
    return value


Fraction = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_check_fraction)]
StageKey = Annotated[
    str,
    matching(
        r"^[a-z][a-z0-9_]{0,63}$",
        "a canonical stage key is lower case letters, digits and '_' (e.g. 'closed_won'); the"
        " CRM's own stage value goes in 'crm'",
    ),
]
SourceName = Annotated[
    str,
    matching(
        r"^[a-z0-9][a-z0-9_-]{0,63}$",
        "a source name is 1-64 lower case letters, digits, '-' or '_' (it is used in state keys"
        " and logs), e.g. 'salesforce-prod'",
    ),
]
Timeout = Annotated[float, Field(gt=0, le=600)]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$|^[^@\s]+@localhost$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise rule("expected an email address such as alice.martin@example.com")
    return value.lower()


Email = Annotated[str, AfterValidator(_check_email)]


def _check_currency(value: str) -> str:
    if re.match(r"^[A-Z]{3}$", value):
        return value
    hint = f"; did you mean '{value.upper()}'?" if re.match(r"^[A-Za-z]{3}$", value) else ""
    raise rule(f"expected a 3-letter ISO 4217 currency code in upper case, e.g. EUR{hint}")


CurrencyCode = Annotated[str, AfterValidator(_check_currency)]


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise rule(
            f"unknown timezone '{value}'; expected an IANA name such as 'Europe/Paris' or"
            f" 'UTC'{did_you_mean(value, _timezones())}"
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
        raise rule("malformed URL; expected e.g. https://acme.my.salesforce.com") from None
    loopback = _is_loopback_host(parts.hostname)
    allowed = ("https", "http") if http_on_loopback and loopback else ("https",)
    if parts.scheme not in allowed:
        raise rule(
            "expected an https:// URL"
            + (" (http:// is accepted only for a loopback host)" if http_on_loopback else "")
        )
    if not parts.hostname:
        raise rule("the URL has no host; expected e.g. https://acme.my.salesforce.com")
    if parts.username is not None or parts.password is not None:
        raise rule("credentials never go in a URL; use the auth section")
    if parts.query or parts.fragment:
        raise rule("the URL must not have a query string or a fragment")
    return value.rstrip("/")


HttpsUrl = Annotated[
    str,
    BeforeValidator(not_interpolation),
    AfterValidator(lambda v: _url(v, http_on_loopback=False)),
]
ApiUrl = Annotated[
    str,
    BeforeValidator(not_interpolation),
    AfterValidator(lambda v: _url(v, http_on_loopback=True)),
]


def url_is_loopback(url: str | None) -> bool:
    return url is not None and _is_loopback_host(urlsplit(url).hostname)


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
                raise rule(
                    f"'${{...}}' interpolation is not supported; write {{env: {name}}} to read"
                    " the environment variable"
                )
            if secret:
                raise rule(f"a secret is never written in the file: give {_SECRET_FORMS}")
            return {"value": value}
        if not isinstance(value, dict):
            forms = _SECRET_FORMS if secret else "text, {value: ...}, " + _SECRET_FORMS
            raise rule(f"expected {forms}")
        kinds = [k for k in _REF_KEYS if k in value]
        if secret and "value" in kinds:
            raise rule(
                "{value: ...} is only for non-secret settings such as a username; give this"
                f" secret as {_SECRET_FORMS}"
            )
        if not kinds:
            raise rule(
                f"expected {_SECRET_FORMS}" + did_you_mean(next(iter(value), None), _REF_KEYS)
            )
        if len(kinds) > 1:
            raise rule(f"give exactly one of {quoted(kinds)}")
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


class AuthBase(ConfigModel):
    #: Fields holding secrets: a default on their {env: ...} needs a loopback endpoint.
    secret_fields: ClassVar[tuple[str, ...]] = ()


def checked_alongside(check: Callable[[Any], list[InitErrorDetails]], what: str) -> WrapValidator:
    """A validator reporting ``check``'s problems on the raw input alongside the value's own
    errors, so one run of `config validate` shows everything (a check on the validated value
    would wait for every other mistake to be fixed)."""

    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        problems = check(value)
        try:
            result = handler(value)
        except ValidationError as exc:
            if not problems:
                raise
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                    loc=e["loc"],
                    input=e["input"],
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(what, errors + problems) from None
        raise_all(what, problems)
        return result

    return WrapValidator(validate)


def unique_items(key: str, what: str) -> WrapValidator:
    """Report items of a list sharing ``key``, on the raw input, alongside the items' own errors."""

    def duplicates(value: Any) -> list[InitErrorDetails]:
        found: list[InitErrorDetails] = []
        if not isinstance(value, list):
            return found
        seen: dict[object, int] = {}
        for index, item in enumerate(value):
            raw = item.get(key) if isinstance(item, dict) else getattr(item, key, None)
            if raw is None or not isinstance(raw, str | int):
                continue
            if raw in seen:
                found.append(
                    error_at(
                        (index, key),
                        f"duplicate {what} {raw!r}: already used by item {seen[raw]}"
                        f" of this list; each {what} must be unique",
                    )
                )
            else:
                seen[raw] = index
        return found

    return checked_alongside(duplicates, what)


# ---------------------------------------------------------------------------------------------
# Tagged unions


@dataclass(frozen=True)
class TaggedUnion:
    """Validation of a union of models discriminated on ``key``, with actionable errors for a
    missing or unknown tag. Put it in the union's ``Annotated``: the union stays the static
    type (for mypy and readers), this object validates. ``members`` is the tag -> model table,
    or a function returning it when members are registered at run time (the CRM sources).

    Errors inside a member are located under ``"key=tag"``, as pydantic's own tagged unions
    do; the loader maps that back to the member model through :meth:`members_now`."""

    key: str
    members: Mapping[str, type[BaseModel]] | Callable[[], Mapping[str, type[BaseModel]]]
    what: str

    def members_now(self) -> Mapping[str, type[BaseModel]]:
        return self.members() if callable(self.members) else self.members

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            self._validate,
            # Each member serializes itself (by its own schema), registered ones included.
            serialization=core_schema.simple_ser_schema("any"),
        )

    def _validate(self, value: Any, info: ValidationInfo) -> BaseModel:
        members = self.members_now()
        if isinstance(value, BaseModel) and type(value) in members.values():
            return value
        model = members[self._tag_of(value, members)]
        try:
            return model.model_validate(value, context=info.context)
        except ValidationError as exc:
            label = f"{self.key}={value[self.key]}"
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                    loc=(label, *e["loc"]),
                    input=e["input"],
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(self.what, errors) from None

    def _tag_of(self, value: Any, members: Mapping[str, type[BaseModel]]) -> str:
        key = self.key
        if not isinstance(value, dict):
            raise rule(f"expected a mapping with '{key}: {' | '.join(members)}'")
        tag = value.get(key)
        if tag is not None and not isinstance(tag, str):
            tag = repr(tag)
        if tag is None:
            message = f"missing required key '{key}': the {self.what}, one of {quoted(members)}"
        elif tag not in members:
            message = (
                f"unknown {self.what} {tag!r}; expected one of {quoted(members)}"
                + did_you_mean(tag, members)
            )
        else:
            return str(tag)
        raise ValidationError.from_exception_data(self.what, [error_at((key,), message)])
