"""Load the YAML config and report every mistake at once, with file, line, column and key path.

YAML is parsed by PyYAML into its node tree first, so every key's position is known; the
constructed data is then validated by the pydantic tree of :mod:`crm_kpi_worker.sync.config`
and each validation error becomes a :class:`ConfigProblem` pointing at the offending key (or,
for a missing key, at its nearest parent that exists).

Two deliberate departures from PyYAML's defaults:

- only ``true``/``false`` are booleans (YAML 1.2), so a CRM value such as ``No`` or ``On``
  stays text instead of silently becoming ``False``/``True``;
- a key written twice in one mapping is an error (PyYAML would keep the last one silently).

Secrets are not read here (a config validates on a machine without them) unless
``check_secrets=True``, which also checks every file the config names (CA bundles, CSVs).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import enum
import json
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from crm_kpi_worker.connectors.registry import plugin_for
from crm_kpi_worker.sync.config import (
    RULE_ERROR,
    AppConfig,
    EnvRef,
    FiscalCalendar,
    MappingBase,
    QuotaEntry,
    SecretError,
    TaggedUnion,
    iter_secret_refs,
)

__all__ = [
    "ConfigError",
    "ConfigFileError",
    "ConfigOrigin",
    "ConfigProblem",
    "format_path",
    "load_config",
    "load_config_text",
    "load_mapping",
    "origin_of",
    "read_quota_csv",
    "summarize",
]

PathElement = str | int
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclasses.dataclass(frozen=True, order=True)
class ConfigProblem:
    """One mistake: where it is (1-based line and column) and what to do about it."""

    file: str
    line: int
    column: int
    #: Key path such as ``sources[0].mapping.stages[3].won``; empty for file-level problems.
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config has problems; ``problems`` lists all of them, in file order."""

    def __init__(self, file: str, problems: Iterable[ConfigProblem]) -> None:
        self.file = file
        self.problems: tuple[ConfigProblem, ...] = tuple(sorted(problems))
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [f"{self.file}: {count} problem{'s' if count != 1 else ''}"]
        lines += [str(p) for p in self.problems]
        return "\n".join(lines)


class ConfigFileError(ConfigError):
    """The file could not be read at all (missing, unreadable, a directory)."""


# ---------------------------------------------------------------------------------------------
# YAML with positions


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader whose only booleans are true/false (YAML 1.2 core schema)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

_INTERPOLATION = re.compile(r"\$\{[^}]*\}?")
#: More values than any real config holds; guards against alias bombs ("billion laughs"),
#: which PyYAML builds cheaply by sharing but which every walk of the data would expand.
MAX_VALUES = 200_000


class _TooLarge(Exception):
    pass


@dataclasses.dataclass
class _Document:
    data: Any
    #: key path -> (line, column), 1-based: of the key for mapping entries, of the item for
    #: sequence items, of the node for the root.
    positions: dict[tuple[PathElement, ...], tuple[int, int]]
    problems: list[ConfigProblem]
    #: Paths of scalars written as ${...}.
    interpolations: list[tuple[PathElement, ...]]

    def position(self, path: Sequence[PathElement]) -> tuple[int, int]:
        """Position of ``path``, or of its nearest ancestor present in the file."""
        return _nearest(self.positions, path)


def _nearest(
    positions: Mapping[tuple[PathElement, ...], tuple[int, int]], path: Sequence[PathElement]
) -> tuple[int, int]:
    for end in range(len(path), -1, -1):
        found = positions.get(tuple(path[:end]))
        if found is not None:
            return found
    return (1, 1)


@dataclasses.dataclass(frozen=True)
class ConfigOrigin:
    """The file a config was loaded from and every key's position in it: problems found after
    loading (against the CRM, during a run) are reported as ``file:line:col: key.path: ...``
    like the loader's own."""

    file: str
    positions: Mapping[tuple[PathElement, ...], tuple[int, int]]

    def problem(self, path: Sequence[PathElement], message: str) -> ConfigProblem:
        """A problem at ``path`` (at its nearest ancestor written in the file, for a default)."""
        line, column = _nearest(self.positions, path)
        return ConfigProblem(self.file, line, column, format_path(path), message)


def origin_of(config: AppConfig) -> ConfigOrigin:
    """Where ``config`` was loaded from; a config built in code has no file (``<config>``)."""
    origin = config._origin
    return origin if isinstance(origin, ConfigOrigin) else ConfigOrigin("<config>", {})


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _parse_yaml(text: str, file: str) -> _Document:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node, file) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(file, [_yaml_problem(exc, file, text)]) from None
    except yaml.YAMLError as exc:  # e.g. ReaderError: a control character in the file
        position = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        raise ConfigError(file, [ConfigProblem(file, line, column, "", str(exc))]) from None
    finally:
        loader.dispose()
    document = _Document(data, {}, duplicates, [])
    if node is not None:
        document.positions[()] = _pos(node.start_mark)
        try:
            _index(node, (), document, set())
        except _TooLarge:
            raise ConfigError(
                file,
                [
                    ConfigProblem(
                        file,
                        1,
                        1,
                        "",
                        f"the file expands to more than {MAX_VALUES} values (through YAML"
                        " aliases?); a config is much smaller",
                    )
                ],
            ) from None
    return document


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    line, column = _pos(mark) if mark is not None else (1, 1)
    message = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    elif exc.context:
        message = f"{exc.context}: {message}"
    lines = text.splitlines()
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    indent = source_line[: len(source_line) - len(source_line.lstrip())]
    if "\\t" in message or "\t" in indent:
        message += "; YAML indents with spaces, never tabs"
    return ConfigProblem(file, line, column, "", f"YAML syntax error: {message}")


def _duplicate_keys(root: yaml.Node, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    stack: list[yaml.Node] = [root]
    seen_nodes: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Mark] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in first:
                        line, column = _pos(key.start_mark)
                        problems.append(
                            ConfigProblem(
                                file,
                                line,
                                column,
                                "",
                                f"duplicate key '{key.value}': it is already set at line"
                                f" {first[key.value].line + 1}; YAML would keep only the last"
                                " one",
                            )
                        )
                    else:
                        first[key.value] = key.start_mark
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return problems


def _index(
    node: yaml.Node, path: tuple[PathElement, ...], document: _Document, active: set[int]
) -> None:
    if id(node) in active:  # an alias of an ancestor: recursive data
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            child = (*path, key.value)
            # Later entries win, as in the constructed data (merge keys come first).
            document.positions[child] = _pos(key.start_mark)
            if len(document.positions) > MAX_VALUES:
                raise _TooLarge
            _index(value, child, document, active)
    elif isinstance(node, yaml.SequenceNode):
        for number, item in enumerate(node.value):
            child = (*path, number)
            document.positions[child] = _pos(item.start_mark)
            if len(document.positions) > MAX_VALUES:
                raise _TooLarge
            _index(item, child, document, active)
    elif (
        isinstance(node, yaml.ScalarNode)
        and node.tag == "tag:yaml.org,2002:str"
        and _INTERPOLATION.search(node.value)
    ):
        document.interpolations.append(path)
    active.discard(id(node))


# ---------------------------------------------------------------------------------------------
# Pydantic locations -> key paths


def format_path(path: Sequence[PathElement]) -> str:
    """``("sources", 0, "mapping", "amount")`` -> ``sources[0].mapping.amount``."""
    out = ""
    for element in path:
        if isinstance(element, int):
            out += f"[{element}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", element):
            out += f".{element}" if out else element
        else:
            out += f"[{json.dumps(element, ensure_ascii=False)}]"
    return out


@dataclasses.dataclass
class _Located:
    path: list[PathElement]
    #: The model whose key is the last path element (for suggestions and descriptions).
    owner: type[BaseModel] | None
    #: The annotation of the value at the path, when known.
    leaf: Any


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _annotation(field: FieldInfo) -> Any:
    """A field's type with its metadata (pydantic keeps ``Annotated`` extras apart)."""
    if not field.metadata:
        return field.annotation
    return Annotated[(field.annotation, *field.metadata)]


def _tagged_union(tp: Any) -> TaggedUnion | None:
    """The :class:`TaggedUnion` validating ``tp``, when it is one."""
    if get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, TaggedUnion)), None)
    return None


def _union_tags(tp: Any, tagged: TaggedUnion | None) -> dict[str, Any]:
    if tagged is not None:  # validated by tag: "key=tag" -> the tag's model
        return {f"{tagged.key}={tag}": model for tag, model in tagged.members_now().items()}
    tags: dict[str, Any] = {}
    for member in get_args(tp):
        if get_origin(member) is Annotated:
            for meta in member.__metadata__:
                if isinstance(meta, Tag):
                    tags[meta.tag] = get_args(member)[0]
    return tags


def _locate(root: type[BaseModel], loc: Sequence[PathElement]) -> _Located:
    """Split a pydantic error location into the data's key path, dropping union tags."""
    tp: Any = root
    owner: type[BaseModel] | None = None
    path: list[PathElement] = []
    for element in loc:
        tagged = _tagged_union(tp)
        tp = _unwrap(tp)
        # A TaggedUnion's static type may be a base model (the CRM sources): its tags count.
        if tagged is not None or _is_union(tp):
            tags = _union_tags(tp, tagged)
            if isinstance(element, str) and element in tags:
                tp = tags[element]
                continue
        if _is_union(tp):
            members = [m for m in get_args(tp) if m is not type(None)]
            tp = _unwrap(members[0]) if len(members) == 1 else None
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            path.append(element)
            field = tp.model_fields.get(str(element))
            tp = None if field is None else _annotation(field)
        elif get_origin(tp) in (list, tuple, set, frozenset):
            path.append(element)
            tp = get_args(tp)[0] if get_args(tp) else None
        elif get_origin(tp) is dict:
            if element == "[key]":
                tp = get_args(tp)[0]
                continue
            path.append(str(element))
            tp = get_args(tp)[1]
        else:
            if element != "[key]":
                path.append(element)
            tp = None
    leaf = _unwrap(tp)
    if _is_union(leaf):
        members = [m for m in get_args(leaf) if m is not type(None)]
        leaf = _unwrap(members[0]) if len(members) == 1 else leaf
    return _Located(path, owner, leaf)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _choices(leaf: Any) -> list[str] | None:
    if get_origin(leaf) is Literal:
        return [str(a) for a in get_args(leaf)]
    if isinstance(leaf, type) and issubclass(leaf, enum.Enum):
        return [str(m.value) for m in leaf]
    return None


def _message(error: Mapping[str, Any], located: _Located) -> str:
    """An actionable message for one pydantic error. Never echoes an input that may be secret:
    only enumeration values (and key names) are quoted back."""
    kind = error["type"]
    value = error.get("input")
    last = located.path[-1] if located.path else None
    if kind == RULE_ERROR:
        return str(error["msg"])
    if kind == "missing":
        described = ""
        if located.owner is not None and isinstance(last, str):
            field = located.owner.model_fields.get(last)
            if field is not None and field.description:
                text = field.description.strip().splitlines()[0].rstrip(".")
                if text[1:2].islower():
                    text = text[0].lower() + text[1:]
                described = f" ({text})"
        return f"missing required key '{last}'{described}"
    if kind == "extra_forbidden":
        valid = list(located.owner.model_fields) if located.owner is not None else []
        close = difflib.get_close_matches(str(last), valid, n=1, cutoff=0.6)
        if close:
            return f"unknown key '{last}'; did you mean '{close[0]}'?"
        return f"unknown key '{last}'; expected one of: {', '.join(valid)}"
    if kind in ("literal_error", "enum"):
        choices = _choices(located.leaf) or []
        expected = ", ".join(f"'{c}'" for c in choices) or str(error.get("ctx", {}))
        shown = f"{value!r}" if isinstance(value, str) and len(value) <= 40 else _kind(value)
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"expected one of {expected}, got {shown}{hint}"
    expectations = {
        "string_type": "text",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "decimal_type": "a number",
        "decimal_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "list_type": "a list (lines starting with '- ')",
        "tuple_type": "a list (lines starting with '- ')",
        "dict_type": "a mapping (key: value lines)",
        "model_type": "a mapping (key: value lines)",
        "model_attributes_type": "a mapping (key: value lines)",
        "date_type": "a date such as 2026-07-01",
        "date_parsing": "a date such as 2026-07-01",
        "date_from_datetime_parsing": "a date such as 2026-07-01",
        "datetime_type": "a date-time such as 2026-06-30T23:59:59+02:00",
        "datetime_parsing": "a date-time such as 2026-06-30T23:59:59+02:00",
        "datetime_from_date_parsing": "a date-time such as 2026-06-30T23:59:59+02:00",
        "path_type": "a file path",
    }
    if kind == "timezone_aware":
        return "expected a date-time with a timezone offset, e.g. 2026-06-30T23:59:59+02:00"
    if kind in expectations:
        return f"expected {expectations[kind]}, got {_kind(value)}"
    if kind == "too_short" and isinstance(value, list | dict) and not value:
        return "must not be empty"
    if kind == "finite_number":
        return "must be a finite number"
    message = str(error["msg"]).removeprefix("Value error, ")
    return re.sub(r"^Input should be ", "must be ", message)


def _validation_problems(
    root: type[BaseModel], exc: ValidationError, document: _Document, file: str
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        located = _locate(root, error["loc"])
        line, column = document.position(located.path)
        problems.append(
            ConfigProblem(file, line, column, format_path(located.path), _message(error, located))
        )
    return problems


def _with_interpolation_problems(
    document: _Document, file: str, problems: list[ConfigProblem]
) -> list[ConfigProblem]:
    """Add a problem for every ``${...}`` scalar, replacing what validation said about it (the
    interpolation is the cause), unless validation already explained it."""
    for path in document.interpolations:
        shown = format_path(path)
        here = [p for p in problems if p.path == shown]
        if any("interpolation" in p.message for p in here):
            continue
        problems = [p for p in problems if p.path != shown]
        line, column = document.position(path)
        problems.append(
            ConfigProblem(
                file,
                line,
                column,
                shown,
                "'${...}' interpolation is not supported; read a value from the environment"
                " with {env: VAR_NAME} (secrets and settings such as a username accept it)",
            )
        )
    return problems


def _validate(
    root: type[ModelT], document: _Document, file: str, base_dir: Path | None
) -> tuple[ModelT | None, list[ConfigProblem]]:
    problems = list(document.problems)
    if not isinstance(document.data, dict):
        what = "empty" if document.data is None else f"{_kind(document.data)}, not a mapping"
        line, column = document.position(())
        problems.append(
            ConfigProblem(
                file,
                line,
                column,
                "",
                f"the file is {what}; expected a mapping of sections (sources:, currency:, ...)",
            )
        )
        return None, problems
    try:
        model = root.model_validate(document.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += _validation_problems(root, exc, document, file)
        return None, _with_interpolation_problems(document, file, problems)
    problems = _with_interpolation_problems(document, file, problems)
    return (None if problems else model), problems


# ---------------------------------------------------------------------------------------------
# Public loading functions


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigFileError(
            str(path), [ConfigProblem(str(path), 0, 0, "", f"cannot read the file: {reason}")]
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path),
            [ConfigProblem(str(path), line, 1, "", "the file is not UTF-8 text")],
        ) from None


def load_config(
    path: str | os.PathLike[str],
    *,
    check_secrets: bool = False,
    environ: Mapping[str, str] | None = None,
) -> AppConfig:
    """Load and validate a config file.

    Raises :class:`ConfigError` with every problem found (:class:`ConfigFileError` when the
    file cannot be read). With ``check_secrets``, also resolves every secret (from ``environ``,
    default ``os.environ``) and checks every file the config names, reporting each failure as
    a problem.
    """
    path = Path(path)
    text = _read_text(path)
    return load_config_text(
        text,
        file=str(path),
        base_dir=path.parent,
        check_secrets=check_secrets,
        environ=environ,
    )


def load_config_text(
    text: str,
    *,
    file: str = "<config>",
    base_dir: Path | None = None,
    check_secrets: bool = False,
    environ: Mapping[str, str] | None = None,
) -> AppConfig:
    """:func:`load_config` for a string; relative paths resolve against ``base_dir``."""
    document = _parse_yaml(text, file)
    data = document.data
    if isinstance(data, dict) and "stages" in data and "sources" not in data:
        raise ConfigError(
            file,
            [
                ConfigProblem(
                    file,
                    *document.position(()),
                    "",
                    "this is a mapping file (the shape of sources[N].mapping), not a config;"
                    " paste it under a source's mapping key (`crm-kpi config show-example`"
                    " prints a whole config)",
                )
            ],
        )
    config, problems = _validate(AppConfig, document, file, base_dir)
    if config is None:
        raise ConfigError(file, problems)
    config._origin = ConfigOrigin(file, document.positions)
    if check_secrets:
        problems = _environment_problems(config, document, file, environ)
        if problems:
            raise ConfigError(file, problems)
    return config


def load_mapping(path: str | os.PathLike[str], crm: str) -> MappingBase:
    """Load a standalone mapping file (the shape of ``sources[].mapping`` of a ``crm``
    source)."""
    path = Path(path)
    document = _parse_yaml(_read_text(path), str(path))
    root: type[MappingBase] = plugin_for(crm).mapping_model
    mapping, problems = _validate(root, document, str(path), path.parent)
    if mapping is None:
        raise ConfigError(str(path), problems)
    return mapping


# ---------------------------------------------------------------------------------------------
# --check-secrets


def _environment_problems(
    config: AppConfig, document: _Document, file: str, environ: Mapping[str, str] | None
) -> list[ConfigProblem]:
    found: list[tuple[tuple[PathElement, ...], str]] = []
    for path, ref in iter_secret_refs(config):
        try:
            value = ref.resolve(environ)
        except SecretError as exc:
            found.append((path, str(exc)))
            continue
        if path[-1] == "private_key" and "PRIVATE KEY-----" not in value.get_secret_value():
            found.append(
                (path, f"{ref.describe()} does not hold a PEM private key (-----BEGIN ...)")
            )
    if config.store.url_env is not None:
        try:
            config.store.resolve_url(environ)
        except SecretError as exc:
            found.append((("store", "url_env"), str(exc)))
    extra: list[ConfigProblem] = []
    for index, source in enumerate(config.sources):
        if source.ca_bundle is not None:
            why = _unreadable(source.ca_bundle)
            if why is not None:
                found.append((("sources", index, "ca_bundle"), f"CA bundle {why}"))
        quota = source.mapping.quota_source
        if quota.csv is not None:
            why = _unreadable(quota.csv)
            if why is not None:
                found.append((("sources", index, "mapping", "quota_source"), f"quota CSV {why}"))
            else:
                extra += _csv_problems(quota.csv, config.fiscal)
    if config.quotas.csv is not None:
        why = _unreadable(config.quotas.csv)
        if why is not None:
            found.append((("quotas", "csv"), f"quota CSV {why}"))
        else:
            extra += _csv_problems(config.quotas.csv, config.fiscal)
    problems = []
    for path, message in found:
        line, column = document.position(path)
        problems.append(ConfigProblem(file, line, column, format_path(path), message))
    return problems + extra


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    return None


def _csv_problems(path: Path, fiscal: FiscalCalendar) -> list[ConfigProblem]:
    try:
        read_quota_csv(path, fiscal)
    except ConfigError as exc:
        return list(exc.problems)
    return []


# ---------------------------------------------------------------------------------------------
# Quota CSV

QUOTA_CSV_COLUMNS = ("rep", "period", "start", "end", "amount")


def read_quota_csv(path: str | os.PathLike[str], fiscal: FiscalCalendar) -> list[QuotaEntry]:
    """Read quotas from a CSV file with a header row.

    Columns: ``rep`` (email), ``amount`` (reporting currency, '.' as decimal separator), and
    either ``period`` (``2026``, ``2026-Q3``, ``2026-07``) or ``start`` and ``end`` (ISO dates,
    ``end`` inclusive). Raises :class:`ConfigError` listing every bad row.
    """
    path = Path(path)
    text = _read_text(path)
    file = str(path)
    problems: list[ConfigProblem] = []
    entries: list[QuotaEntry] = []
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ConfigError(file, [ConfigProblem(file, 1, 1, "", "the CSV file is empty")]) from None
    unknown = [h for h in header if h not in QUOTA_CSV_COLUMNS]
    for name in unknown:
        problems.append(
            ConfigProblem(
                file,
                1,
                header.index(name) + 1,
                "",
                f"unknown column '{name}'; expected {', '.join(QUOTA_CSV_COLUMNS)}",
            )
        )
    for required in ("rep", "amount"):
        if required not in header:
            problems.append(ConfigProblem(file, 1, 1, "", f"missing column '{required}'"))
    if problems:
        raise ConfigError(file, problems)
    seen: dict[tuple[str, Any, Any], int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                ConfigProblem(
                    file, line, 1, "", f"expected {len(header)} columns, found {len(row)}"
                )
            )
            continue
        data = {k: v.strip() for k, v in zip(header, row, strict=True) if v.strip()}
        try:
            entry = QuotaEntry.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                located = _locate(QuotaEntry, error["loc"])
                column_name = located.path[0] if located.path else None
                column = (
                    header.index(column_name) + 1
                    if isinstance(column_name, str) and column_name in header
                    else 1
                )
                problems.append(
                    ConfigProblem(
                        file, line, column, format_path(located.path), _message(error, located)
                    )
                )
            continue
        key = (entry.rep, *entry.bounds(fiscal))
        if key in seen:
            problems.append(
                ConfigProblem(
                    file,
                    line,
                    1,
                    "",
                    f"{entry.rep} already has a quota for {key[1]}..{key[2]} (line {seen[key]})",
                )
            )
            continue
        seen[key] = line
        entries.append(entry)
    if problems:
        raise ConfigError(file, problems)
    return entries


# ---------------------------------------------------------------------------------------------
# Summary


def _auth_summary(source: Any) -> str:
    auth = getattr(source, "auth", None)
    if auth is None:  # a CRM without credentials (an in-memory one in tests)
        return "no auth"
    parts = [f"auth {auth.method}"]
    for name in ("username",):
        ref = getattr(auth, name, None)
        if isinstance(ref, EnvRef):
            parts.append(f"{name} from ${ref.env}")
    return ", ".join(parts)


def _source_lines(config: AppConfig) -> Iterator[str]:
    for source in config.sources:
        where = source.describe_endpoint()
        yield f"  - {source.name}: {source.crm}, {_auth_summary(source)}, {where}"
        mapping = source.mapping
        stage_keys = dict.fromkeys(s.stage for s in mapping.stages)
        quota = mapping.quota_source
        quota_text = f"csv {quota.csv}" if quota.kind == "csv" else quota.kind
        yield (
            f"    {len(mapping.stages)} stage values -> {len(stage_keys)} stages"
            f" (qualified: {mapping.qualified_stage}, conversion from:"
            f" {mapping.conversion_entry_stage}), amount is {mapping.amount_is.upper()},"
            f" quotas from {quota_text}, demos {'mapped' if mapping.demos else 'not mapped'}"
        )


def summarize(config: AppConfig) -> str:
    """A short human summary of a valid config. Contains no secret."""
    lines = [f"sources: {len(config.sources)}", *_source_lines(config)]
    currency = config.currency
    rates = f", {len(currency.rates)} static rates" if currency.rates else ""
    lines.append(
        f"reporting currency: {currency.reporting} (conversion: {currency.conversion}{rates})"
    )
    lines.append(config.fiscal.describe())
    if config.teams:
        teams = ", ".join(f"{name} ({len(reps)})" for name, reps in config.teams.items())
        lines.append(f"teams: {len(config.teams)}: {teams}")
    elif any(s.mapping.team_field for s in config.sources):
        lines.append("teams: from the CRM's team field")
    else:
        lines.append("teams: none")
    quota_text = f"quotas in config: {len(config.quotas.entries)}"
    if config.quotas.csv is not None:
        quota_text += f" + CSV {config.quotas.csv}"
    if config.quotas.ramp.prorate:
        quota_text += " (ramp prorated)"
    lines.append(quota_text)
    if config.variable_pay is not None:
        pay = config.variable_pay
        lines.append(
            f"variable pay: default target {pay.target if pay.target is not None else 'none'},"
            f" {len(pay.targets)} per-rep targets"
        )
    kpi_counts = []
    for source in config.sources:
        fields = config.kpi_fields_for(source)
        if fields.writes_nothing:
            kpi_counts.append(f"{source.name}: none (compute only: nothing is written to the CRM)")
            continue
        target = f", scorecard {fields.scorecard.object}" if fields.scorecard is not None else ""
        kpi_counts.append(f"{source.name}: {fields.count()}{target}")
    lines.append(f"KPI fields: {'; '.join(kpi_counts)}")
    schedule = (
        config.schedule.describe(config.fiscal.timezone)
        if config.schedule is not None
        else "none (runs once per command)"
    )
    lines.append(f"schedule: {schedule}")
    lines.append(f"store: {config.store.describe()}")
    write = config.write
    lines.append(
        f"write: batches of up to {write.batch_size}, dry run {'on' if write.dry_run else 'off'},"
        f" language {write.language}"
    )
    if config.runtime.as_of is not None:
        lines.append(f"as_of pinned to {config.runtime.as_of.isoformat()}")
    return "\n".join(lines)
