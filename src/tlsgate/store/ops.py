"""Staged changes as operations on the configuration document (pure).

Operations are replayed over the newest revision when they are applied, so changes
staged by two admins never overwrite each other: an ``add`` to a list made by one
admin and a ``set`` of another section by the other both survive.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tlsgate.errors import ConfigError

Op = Literal["set", "add", "remove"]
JSON = Any


@dataclass(frozen=True, slots=True)
class ChangeOp:
    op: Op
    path: str
    """Dotted path in the document (``inspection.source_exceptions``); ``""`` is the root."""
    value: JSON = None
    author: str = ""
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def describe(self) -> str:
        where = self.path or "(whole configuration)"
        shown = json.dumps(self.value, sort_keys=True)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        verb = {"set": "set", "add": "add to", "remove": "remove from"}[self.op]
        return f"{verb} {where}: {shown}"


def _parent(doc: dict[str, JSON], path: str, op: ChangeOp) -> tuple[dict[str, JSON], str]:
    parts = path.split(".")
    node: JSON = doc
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise ConfigError(f"cannot {op.describe()}: {path!r} is not a configuration section")
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise ConfigError(f"cannot {op.describe()}: {path!r} is not a configuration section")
    return node, parts[-1]


def apply_op(doc: dict[str, JSON], op: ChangeOp) -> dict[str, JSON]:
    """Apply one operation in place; raise ConfigError when it cannot apply."""
    if op.op == "set":
        if not op.path:
            if not isinstance(op.value, dict):
                raise ConfigError("a whole configuration must be a table")
            doc.clear()
            doc.update(copy.deepcopy(op.value))
            return doc
        parent, key = _parent(doc, op.path, op)
        parent[key] = copy.deepcopy(op.value)
        return doc
    parent, key = _parent(doc, op.path, op)
    items = parent.get(key, [])
    if not isinstance(items, list):
        raise ConfigError(f"cannot {op.describe()}: {op.path} is not a list")
    if op.op == "add":
        if op.value not in items:
            parent[key] = [*items, copy.deepcopy(op.value)]
        return doc
    if op.value not in items:
        raise ConfigError(f"cannot {op.describe()}: {op.value!r} is not in {op.path}")
    parent[key] = [x for x in items if x != op.value]
    return doc


def apply_ops(document: dict[str, JSON], ops: list[ChangeOp]) -> dict[str, JSON]:
    """A new document: ``document`` with ``ops`` applied in order (the input is unchanged)."""
    doc = copy.deepcopy(document)
    for op in ops:
        apply_op(doc, op)
    return doc
