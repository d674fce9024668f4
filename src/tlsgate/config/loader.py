"""Read ``tlsgate.toml`` into :class:`TlsgateConfig`, with errors naming file, line and path."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import ConfigError

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """Best line number (1-based) of an option path such as ``("inspection", "enabled")``."""
    names = [p for p in path if isinstance(p, str)]
    if not names:
        return None
    table: list[str] = []
    best: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _TABLE.match(line)
        if m:
            table = [part.strip().strip("\"'") for part in m.group(1).split(".")]
            if table == names:
                best = lineno
            continue
        k = _KEY.match(line)
        if k and [*table, k.group(1)] == names[: len(table) + 1] and len(table) < len(names):
            if [*table, k.group(1)] == names:
                return lineno
            best = best or lineno
    return best


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_validation_error(
    err: ValidationError, *, source: str, text: str | None = None
) -> list[str]:
    """One line per problem: ``file:line: option.path: what is wrong``."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = source
        if text is not None:
            lineno = locate(text, loc)
            if lineno is not None:
                where = f"{source}:{lineno}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown option (check the spelling; see docs/configuration.md)"
        elif e["type"] == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"{e['input']!r} is not one of {expected}"
        lines.append(f"{where}: {_dotted(loc)}: {msg}")
    return lines


def parse_config(data: Mapping[str, Any], *, source: str, text: str | None = None) -> TlsgateConfig:
    try:
        return TlsgateConfig.model_validate(data)
    except ValidationError as err:
        problems = describe_validation_error(err, source=source, text=text)
        raise ConfigError(
            "; ".join(problems), fix="correct the file and run 'tlsgate config check' again"
        ) from None


def load_config_file(path: Path) -> TlsgateConfig:
    """Parse and validate a TOML configuration file, or raise :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file", fix="give the path of an existing tlsgate.toml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}", fix="fix the TOML syntax at that line"
        ) from None
    return parse_config(data, source=str(path), text=text)
