"""Write a configuration as TOML (``tlsgate config export``) that reads back identically.

A small writer for the shapes the model has: scalars, arrays of scalars, tables and
arrays of tables.  None is left out (TOML has no null; the option then takes its
default when read back).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from tlsgate.config.model import TlsgateConfig

_BARE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(out: list[str], prefix: str, data: Mapping[str, Any]) -> None:
    nested: list[tuple[str, Any]] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping) or _is_table_array(v):
            nested.append((k, v))
        else:
            out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in nested:
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, Mapping):
            out += ["", f"[{name}]"]
            _table(out, name, v)
        else:
            for item in v:
                out += ["", f"[[{name}]]"]
                _table(out, name, item)


def dumps(data: Mapping[str, Any], *, header: str = "") -> str:
    """TOML text of ``data`` (str keys; values str, int, float, bool, list, dict, None)."""
    out: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(out, "", data)
    return "\n".join(out).lstrip("\n") + "\n"


def config_to_toml(config: TlsgateConfig, *, header: str = "") -> str:
    """The whole configuration, every option written out (defaults included)."""
    return dumps(config.model_dump(mode="json"), header=header)
