"""Read ``tlsgate.toml`` into :class:`TlsgateConfig`, with errors naming file, line and path.

Every problem is reported, each as one line ``file:line: option.path: what is wrong``:
TOML syntax, unknown options (with the closest known name), wrong types and values, and
cross-references (a rule naming a set that does not exist).  Nothing is applied unless
the whole file is valid.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tlsgate.config.model import (
    DEFAULT_INTERNAL,
    INTERNAL,
    AccessRule,
    ComputerSet,
    DomainSet,
    Network,
    ReferenceProblem,
    TlsgateConfig,
    UrlSet,
    User,
    UserSet,
    reference_problems,
)
from tlsgate.errors import ConfigError

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")

Loc = Sequence[str | int]
_M = TypeVar("_M", bound=BaseModel)


def _split(header: str) -> list[str]:
    return [part.strip().strip("\"'") for part in header.split(".")]


def locate(text: str, path: Loc) -> int | None:
    """Best line number (1-based) of an option path such as ``("rules", 2, "destinations")``.

    Follows ``[table]`` and ``[[array.of.tables]]`` headers (counting the latter, so
    ``rules[2]`` is the third ``[[rules]]``); the answer is the line of the deepest
    key or header that is a prefix of ``path``.
    """
    want = list(path)
    table: list[str | int] = []
    counts: dict[tuple[str, ...], int] = {}
    best: int | None = None
    best_len = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        candidate: list[str | int] | None = None
        m = _ARRAY_TABLE.match(line)
        if m:
            names = _split(m.group(1))
            key = tuple(names)
            index = counts.get(key, -1) + 1
            counts[key] = index
            table = [*names, index]
            candidate = table
        elif m2 := _TABLE.match(line):
            table = list(_split(m2.group(1)))
            candidate = table
        elif k := _KEY.match(line):
            candidate = [*table, k.group(1)]
        if candidate is None or len(candidate) > len(want) or len(candidate) <= best_len:
            continue
        if want[: len(candidate)] == candidate:
            best, best_len = lineno, len(candidate)
            if best_len == len(want):
                return best
    return best


def dotted(loc: Loc) -> str:
    """``("rules", 2, "destinations", 0)`` → ``rules[2].destinations[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose fields are allowed at ``loc`` (for 'did you mean')."""
    model: type[BaseModel] = TlsgateConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann: Any = field.annotation
        while typing.get_origin(ann) in (list, typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if not args:
                return None
            ann = args[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _unknown_option(loc: Loc) -> str:
    msg = "unknown option"
    parent = _model_at(loc[:-1])
    if parent is not None and loc and isinstance(loc[-1], str):
        close = difflib.get_close_matches(loc[-1], list(parent.model_fields), n=1, cutoff=0.6)
        if close:
            return f"{msg} (did you mean {close[0]!r}?)"
        return f"{msg} (allowed: {', '.join(parent.model_fields)})"
    return f"{msg} (check the spelling; see docs/configuration.md)"


def _where(source: str, text: str | None, loc: Loc) -> str:
    if text is not None:
        lineno = locate(text, loc)
        if lineno is not None:
            return f"{source}:{lineno}"
    return source


def describe_validation_error(
    err: ValidationError, *, source: str, text: str | None = None
) -> list[str]:
    """One line per problem: ``file:line: option.path: what is wrong``."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = _unknown_option(loc)
        elif e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"{e['input']!r} is not one of {expected}"
        elif e["type"] == "missing":
            msg = "required option is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif e["type"].endswith(("_type", "_parsing")):
            msg = f"{msg} (got {e['input']!r})"
        path = f"{dotted(loc)}: " if loc else ""
        lines.append(f"{_where(source, text, loc)}: {path}{msg}")
    return lines


def _describe_references(
    problems: Sequence[ReferenceProblem], *, source: str, text: str | None
) -> list[str]:
    return [f"{_where(source, text, p.loc)}: {dotted(p.loc)}: {p.text}" for p in problems]


def _salvage_references(data: Mapping[str, Any]) -> list[ReferenceProblem]:
    """Reference problems of the rules in a file that has other problems too.

    So one run of ``config check`` also reports an unknown set name, not only after every
    type error is fixed.  Objects that do not validate still count by name, so a broken
    set does not make every rule that names it "unknown" as well.
    """

    def items(key: str) -> list[Any]:
        raw = data.get(key)
        return raw if isinstance(raw, list) else []

    def objects(key: str, model: type[_M]) -> list[_M]:
        out: list[_M] = []
        for item in items(key):
            try:
                out.append(model.model_validate(item))
            except ValidationError:
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str) and name.strip():
                    out.append(model.model_construct(name=name.strip(), users=[]))
        return out

    rules: list[AccessRule] = []
    broken: set[int] = set()
    for i, item in enumerate(items("rules")):
        try:
            rules.append(AccessRule.model_validate(item))
        except ValidationError:
            broken.add(i)
            rules.append(
                AccessRule.model_construct(
                    name=f"\0broken {i}", action="deny", sources=[], destinations=[], users=[]
                )
            )
    networks = objects("networks", Network)
    if not any(n.name.lower() == INTERNAL.lower() for n in networks):
        networks.insert(0, DEFAULT_INTERNAL)
    problems = reference_problems(
        networks=networks,
        computer_sets=objects("computer_sets", ComputerSet),
        domain_sets=objects("domain_sets", DomainSet),
        url_sets=objects("url_sets", UrlSet),
        user_sets=objects("user_sets", UserSet),
        users=objects("users", User),
        rules=rules,
    )
    return [p for p in problems if p.loc[0] == "rules" and p.loc[1] not in broken]


def check_config(
    data: Mapping[str, Any], *, source: str, text: str | None = None
) -> tuple[TlsgateConfig | None, list[str]]:
    """Validate ``data``: the config and no problems, or None and every problem (one line each)."""
    collected: list[ReferenceProblem] = []
    try:
        config = TlsgateConfig.model_validate(data, context={"reference_problems": collected})
    except ValidationError as err:
        lines = describe_validation_error(err, source=source, text=text)
        lines += _describe_references(_salvage_references(data), source=source, text=text)
        return None, lines
    if collected:
        return None, _describe_references(collected, source=source, text=text)
    return config, []


def parse_config(data: Mapping[str, Any], *, source: str, text: str | None = None) -> TlsgateConfig:
    """Validate ``data`` or raise :class:`ConfigError` naming every problem."""
    config, problems = check_config(data, source=source, text=text)
    if config is None:
        raise ConfigError(
            "; ".join(problems), fix="correct the file and run 'tlsgate config check' again"
        )
    return config


def _toml_problem(path: Path | str, exc: tomllib.TOMLDecodeError, text: str) -> str:
    msg = str(exc)
    m = _TOML_POS.search(msg)
    if m:
        return f"{path}:{m.group(1)}: not valid TOML: {msg[: m.start()]} (column {m.group(2)})"
    if msg.endswith("(at end of document)"):
        # Something opened (an array, a string) is never closed.
        last = max(1, len(text.splitlines()))
        what = msg.removesuffix("(at end of document)").strip()
        return f"{path}:{last}: not valid TOML: {what} (at the end of the file)"
    return f"{path}: not valid TOML: {msg}"


def read_config_file(path: Path) -> tuple[str, dict[str, Any]]:
    """The text and TOML data of a file, or :class:`ConfigError` (unreadable, bad TOML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file", fix="give the path of an existing tlsgate.toml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            _toml_problem(path, exc, text), fix="fix the TOML syntax at that line"
        ) from None


def check_config_file(path: Path) -> tuple[TlsgateConfig | None, list[str]]:
    """Every problem of a configuration file (``tlsgate config check``), one line each."""
    try:
        text, data = read_config_file(path)
    except ConfigError as exc:
        return None, [exc.message]
    return check_config(data, source=str(path), text=text)


def load_config_file(path: Path) -> TlsgateConfig:
    """Parse and validate a TOML configuration file, or raise :class:`ConfigError`."""
    text, data = read_config_file(path)
    return parse_config(data, source=str(path), text=text)
