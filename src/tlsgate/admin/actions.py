"""The operations behind the API and the console, on the same functions the CLI calls.

Every change is staged in the configuration store (``Store.stage``) exactly as the
``tlsgate inspection|rules`` commands stage it: inspection settings as list/set
operations on ``inspection.*``, access-policy edits as the sections that
:func:`tlsgate.policy.edit.changed_sections` reports.  Functions here are synchronous
(the store is); the web layer runs them in a worker thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from tlsgate.config.home import Home
from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import UsageError
from tlsgate.policy import edit
from tlsgate.policy.match import normalise_domain, parse_source
from tlsgate.store import ChangeOp, Revision, Store, open_store

SOURCES = "inspection.source_exceptions"
DESTINATIONS = "inspection.destination_exceptions"
ExceptionKind = Literal["source", "destination"]


def console_author(user: str, via: str = "console") -> str:
    """Who staged or applied a change from the console: ``admin@host (console)``, or
    ``token-name@host (API token)``."""
    return f"{user}@{socket.gethostname()} ({via})"


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """Where the store is; each operation opens it, works and closes it (like the CLI)."""

    home: Home
    store_url: str | None

    @contextmanager
    def opened(self) -> Iterator[Store]:
        store = open_store(self.store_url, self.home)
        try:
            yield store
        finally:
            store.close()


# -- inspection --------------------------------------------------------------------------


def exception_op(kind: ExceptionKind, action: Literal["add", "remove"], value: str) -> ChangeOp:
    """The staged operation for adding/removing a source or destination exception,
    validated and normalised as ``tlsgate inspection except …`` does."""
    path = SOURCES if kind == "source" else DESTINATIONS
    if action == "remove":
        text = value.strip() if kind == "source" else value.strip().lower().rstrip(".")
        return ChangeOp("remove", path, text)
    try:
        if kind == "source":
            net = parse_source(value)
            text = str(net.network_address) if net.num_addresses == 1 else str(net)
        else:
            text = normalise_domain(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ChangeOp("add", path, text)


def on_client_certificate_op(action: Literal["tunnel", "deny"]) -> ChangeOp:
    return ChangeOp("set", "inspection.on_client_certificate", action)


def enabled_op(enabled: bool) -> ChangeOp:
    return ChangeOp("set", "inspection.enabled", enabled)


def stage(store: Store, ops: list[ChangeOp], author: str) -> int:
    """Stage ``ops``; returns the number of staged changes afterwards."""
    return store.stage(ops, author)


def inspection_view(store: Store) -> dict[str, Any]:
    applied = store.applied_config().inspection
    staged = store.staged_config().inspection
    return {
        "revision": store.head_number(),
        "applied": applied.model_dump(mode="json"),
        "staged": staged.model_dump(mode="json"),
    }


def learned_view(store: Store) -> list[dict[str, Any]]:
    return [
        {
            "host": e.host,
            "port": e.port,
            "reason": e.reason,
            "first_seen": e.first_seen.isoformat(),
            "last_seen": e.last_seen.isoformat(),
            "hits": e.hits,
            "expires_at": e.expires_at.isoformat(),
        }
        for e in store.learned()
    ]


def forget(store: Store, host: str, port: int) -> None:
    if not store.forget(host.strip().lower(), port):
        raise UsageError(
            f"{host}:{port} is not a learned exception", fix="reload the list of learned servers"
        )


def make_permanent(store: Store, host: str, port: int, author: str) -> int:
    """Stage ``host`` as a destination exception (tunnelled for good once applied)."""
    if not store.is_learned(host.strip().lower(), port):
        raise UsageError(
            f"{host}:{port} is not a learned exception", fix="reload the list of learned servers"
        )
    return store.stage([exception_op("destination", "add", host)], author)


# -- access policy -------------------------------------------------------------------------


PolicyChange = Callable[[TlsgateConfig], TlsgateConfig]


def stage_policy(store: Store, change: PolicyChange, author: str) -> int:
    """Apply ``change`` to the staged configuration and stage the sections it changed
    (what ``tlsgate rules …`` does); returns the number of staged changes."""
    before = store.staged_config()
    changes = edit.changed_sections(before, change(before))
    if not changes:
        return len(store.staged())
    ops = [ChangeOp("set", path, value) for path, value in changes.items()]
    return store.stage(ops, author)


def rules_view(store: Store) -> dict[str, Any]:
    applied, staged = store.applied_config(), store.staged_config()
    return {
        "revision": store.head_number(),
        "applied": [r.model_dump(mode="json") for r in applied.rules],
        "staged": [r.model_dump(mode="json") for r in staged.rules],
    }


def sets_view(store: Store) -> list[dict[str, Any]]:
    cfg = store.staged_config()
    out = []
    for kind, (section, entries) in edit.SET_SECTIONS.items():
        for obj in getattr(cfg, section):
            out.append(
                {
                    "kind": kind,
                    "name": obj.name,
                    "entries": [str(x) for x in getattr(obj, entries)],
                    "description": obj.description,
                }
            )
    return out


# -- staged changes, apply, history --------------------------------------------------------


def staged_view(store: Store) -> dict[str, Any]:
    ops = store.staged()
    return {
        "revision": store.head_number(),
        "count": len(ops),
        "changes": [
            {
                "op": op.op,
                "path": op.path,
                "value": op.value,
                "author": op.author,
                "time": op.time.isoformat(),
                "description": op.describe(),
            }
            for op in ops
        ],
        "diff": "".join(store.diff()) if ops else "",
    }


def apply(store: Store, message: str, author: str, expected_revision: int | None) -> Revision:
    staged = store.staged()
    if not staged and (expected_revision is None or expected_revision == store.head_number()):
        raise UsageError("there are no staged changes to apply", fix="change something first")
    text = message.strip() or "; ".join(op.describe() for op in staged)[:200]
    return store.apply(text, author, expected_head=expected_revision)


def rollback(store: Store, number: int, message: str, author: str) -> Revision:
    head = store.head_number()
    if not 1 <= number <= head:
        raise UsageError(f"there is no revision {number}", fix=f"choose 1 to {head}")
    return store.rollback(number, message, author)


def revision_view(rev: Revision) -> dict[str, Any]:
    return {
        "number": rev.number,
        "author": rev.author,
        "created_at": rev.created_at.isoformat(),
        "message": rev.message,
        "parent": rev.parent,
    }


def members_view(store: Store) -> dict[str, Any]:
    head = store.head_number()
    return {
        "revision": head,
        "members": [
            {
                "name": m.name,
                "address": m.address,
                "version": m.version,
                "revision": m.applied_revision,
                "state": m.state,
                "description": m.description,
                "heartbeat_at": m.heartbeat_at.isoformat(),
                "started_at": m.started_at.isoformat(),
            }
            for m in store.members()
        ],
    }
