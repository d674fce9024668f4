"""The store's operations: stage, apply, discard, diff, history, rollback, members,
learned exceptions, the admin console's users and API tokens.  Synchronous; the proxy
calls it from a worker thread.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from tlsgate.config.home import Home
from tlsgate.config.loader import check_config
from tlsgate.config.model import TlsgateConfig
from tlsgate.config.toml_writer import config_to_toml
from tlsgate.errors import ConfigError, ConflictError, StoreError
from tlsgate.policy.inspection import LearnedEntry
from tlsgate.store.backend import Backend, PostgresBackend, SqliteBackend
from tlsgate.store.ops import ChangeOp, apply_ops

Clock = Callable[[], datetime]
NOTIFY_CHANNEL = "tlsgate_config"
SYNCED_TEXT = "Server configuration matches the stored configuration."
State = Literal["Synced", "Pending", "Error", "Unreachable"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class Revision:
    number: int
    document: dict[str, Any]
    author: str
    created_at: datetime
    message: str
    parent: int | None

    def config(self) -> TlsgateConfig:
        """The typed configuration, or ConfigError naming every problem (one line)."""
        config, problems = _problems(self.document, f"revision {self.number}")
        if config is None:
            raise ConfigError(f"revision {self.number} does not validate: {problems}")
        return config


@dataclass(frozen=True, slots=True)
class MemberStatus:
    name: str
    address: str
    version: str
    applied_revision: int
    state: State
    description: str
    heartbeat_at: datetime
    started_at: datetime


# A learned exception is the policy's own value: the store keeps what the decision uses.
LearnedException = LearnedEntry


CredentialKind = Literal["user", "token"]


@dataclass(frozen=True, slots=True)
class AdminCredential:
    """An admin console user (``secret_hash``: argon2id of the password) or API token
    (``secret_hash``: SHA-256 hex of the token); the secrets themselves are never stored."""

    kind: CredentialKind
    name: str
    secret_hash: str
    created_at: datetime


def _problems(document: dict[str, Any], what: str) -> tuple[TlsgateConfig | None, str]:
    """Validate like ``tlsgate config check`` does: the config, or every problem on one line."""
    config, problems = check_config(document, source=what)
    return config, "; ".join(p.removeprefix(f"{what}: ") for p in problems)


def _validate(document: dict[str, Any], what: str) -> TlsgateConfig:
    config, problems = _problems(document, what)
    if config is None:
        raise ConfigError(
            f"{what} is not a valid configuration: {problems}",
            fix="run 'tlsgate diff', correct or 'tlsgate discard' the change, then apply",
        )
    return config


class Store:
    """One store (SQLite file or PostgreSQL database); see docs/store.md."""

    def __init__(self, backend: Backend, *, now: Clock = _utcnow) -> None:
        self.db = backend
        self.now = now
        self.db.migrate()
        self._ensure_initial_revision()

    @property
    def location(self) -> str:
        return self.db.location

    def close(self) -> None:
        self.db.close()

    # -- revisions ---------------------------------------------------------------------
    def _ensure_initial_revision(self) -> None:
        with self.db.transaction("create the initial revision"):
            if self.db.query("SELECT 1 FROM revisions WHERE number = 1"):
                return
            doc = TlsgateConfig().model_dump(mode="json")
            self._insert_revision(1, doc, "tlsgate", "initial configuration", None)

    def _insert_revision(
        self, number: int, doc: dict[str, Any], author: str, message: str, parent: int | None
    ) -> None:
        self.db.query(
            "INSERT INTO revisions (number, document, author, created_at, message, parent) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (number, json.dumps(doc, sort_keys=True), author, _ts(self.now()), message, parent),
            action="write a revision",
        )
        self.db.query("UPDATE meta SET value = ? WHERE key = 'head'", (str(number),))

    @staticmethod
    def _revision(row: tuple[Any, ...]) -> Revision:
        return Revision(int(row[0]), json.loads(row[1]), row[2], _dt(row[3]), row[4], row[5])

    _REV_COLUMNS = "number, document, author, created_at, message, parent"

    def _head_in_transaction(self) -> Revision:
        rows = self.db.query(
            f"SELECT {self._REV_COLUMNS} FROM revisions ORDER BY number DESC LIMIT 1",
            action="read the newest revision",
        )
        return self._revision(rows[0])

    def head_number(self) -> int:
        rows = self.db.read("SELECT value FROM meta WHERE key = 'head'", action="read the head")
        return int(rows[0][0])

    def head(self) -> Revision:
        rows = self.db.read(
            f"SELECT {self._REV_COLUMNS} FROM revisions ORDER BY number DESC LIMIT 1",
            action="read the newest revision",
        )
        return self._revision(rows[0])

    def revision(self, number: int) -> Revision:
        rows = self.db.read(
            f"SELECT {self._REV_COLUMNS} FROM revisions WHERE number = ?",
            (number,),
            action=f"read revision {number}",
        )
        if not rows:
            raise StoreError(
                f"there is no revision {number}", fix="see 'tlsgate history' for the revisions"
            )
        return self._revision(rows[0])

    def history(self, limit: int = 20) -> list[Revision]:
        rows = self.db.read(
            f"SELECT {self._REV_COLUMNS} FROM revisions ORDER BY number DESC LIMIT ?",
            (limit,),
            action="read the history",
        )
        return [self._revision(r) for r in rows]

    def applied_config(self) -> TlsgateConfig:
        return self.head().config()

    # -- staging -------------------------------------------------------------------------
    def _staged_rows(self) -> list[tuple[int, ChangeOp]]:
        rows = self.db.query(
            "SELECT id, op, path, value, author, created_at FROM staged_ops ORDER BY id"
        )
        return [(int(r[0]), ChangeOp(r[1], r[2], json.loads(r[3]), r[4], _dt(r[5]))) for r in rows]

    def staged(self) -> list[ChangeOp]:
        with self.db.transaction("read staged changes", write=False):
            return [op for _, op in self._staged_rows()]

    def staged_document(self) -> dict[str, Any]:
        """The head revision's document with the staged operations replayed on it."""
        with self.db.transaction("read staged changes", write=False):
            head = self._head_in_transaction()
            return apply_ops(head.document, [op for _, op in self._staged_rows()])

    def staged_config(self) -> TlsgateConfig:
        return _validate(self.staged_document(), "the staged configuration")

    def stage(self, ops: list[ChangeOp], author: str) -> int:
        """Add ``ops`` to the staged changes; refuses ops that cannot apply.  Returns the
        number of staged operations afterwards."""
        now = self.now()
        with self.db.transaction("stage a change"):
            head = self._head_in_transaction()
            staged = [op for _, op in self._staged_rows()]
            apply_ops(head.document, staged + ops)  # raises ConfigError: nothing staged
            for op in ops:
                self.db.query(
                    "INSERT INTO staged_ops (op, path, value, author, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (op.op, op.path, json.dumps(op.value, sort_keys=True), author, _ts(now)),
                    action="stage a change",
                )
            return len(staged) + len(ops)

    def discard(self) -> int:
        with self.db.transaction("discard staged changes"):
            count = len(self._staged_rows())
            self.db.query("DELETE FROM staged_ops")
            return count

    def diff(self) -> list[str]:
        """Unified diff, applied vs staged, as tlsgate.toml text (empty: nothing staged).

        When either side does not validate, both are shown as sorted JSON instead (with
        the reason on top), so the diff still shows only what the staged changes touch.
        """
        with self.db.transaction("read staged changes", write=False):
            head = self._head_in_transaction()
            staged_doc = apply_ops(head.document, [op for _, op in self._staged_rows()])
        applied, applied_problems = _problems(head.document, f"revision {head.number}")
        staged, staged_problems = _problems(staged_doc, "the staged configuration")
        if applied is not None and staged is not None:
            before, after = config_to_toml(applied), config_to_toml(staged)
        else:
            before = json.dumps(head.document, indent=2, sort_keys=True) + "\n"
            after = json.dumps(staged_doc, indent=2, sort_keys=True) + "\n"
            if staged_problems:
                after = f"# the staged configuration does not validate: {staged_problems}\n" + after
            if applied_problems:
                before = (
                    f"# revision {head.number} does not validate: {applied_problems}\n" + before
                )
        return list(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                f"revision {head.number} (applied)",
                "staged",
            )
        )

    def apply(self, message: str, author: str, *, expected_head: int | None = None) -> Revision:
        """Staged changes → a new revision, validated, in one transaction.

        ``expected_head``: the revision the admin looked at; if another admin applied
        since, nothing changes and ConflictError says so (the staged changes stay).
        """
        with self.db.transaction("apply the configuration"):
            head = self._head_in_transaction()
            if expected_head is not None and head.number != expected_head:
                raise ConflictError(
                    f"revision {head.number} was applied by {head.author} at "
                    f"{head.created_at:%Y-%m-%d %H:%M:%S} UTC since you looked at revision "
                    f"{expected_head}; nothing was changed and the staged changes are kept",
                    fix="run 'tlsgate diff' and apply again",
                )
            rows = self._staged_rows()
            if not rows:
                raise StoreError(
                    "there are no staged changes to apply",
                    fix="change something first (see 'tlsgate --help'), or 'tlsgate diff'",
                )
            doc = apply_ops(head.document, [op for _, op in rows])
            _validate(doc, f"revision {head.number + 1}")
            number = head.number + 1
            self._insert_revision(number, doc, author, message, head.number)
            self.db.query("DELETE FROM staged_ops WHERE id <= ?", (rows[-1][0],))
            self.db.notify(NOTIFY_CHANNEL, str(number))
        return self.revision(number)

    def rollback(self, number: int, message: str, author: str) -> Revision:
        """A new revision with the content of revision ``number``; staged changes stay."""
        old = self.revision(number)
        return self.apply_document(old.document, message, author)

    def apply_document(
        self,
        document: dict[str, Any],
        message: str,
        author: str,
        *,
        only_if_different: bool = False,
    ) -> Revision:
        """A whole document as a new revision (rollback, ``serve --config``); staged
        changes stay staged.  With ``only_if_different`` an equal head is returned as is."""
        _validate(document, "the configuration")
        canonical = json.loads(json.dumps(document, sort_keys=True))
        with self.db.transaction("apply a configuration"):
            head = self._head_in_transaction()
            if only_if_different and head.document == canonical:
                return head
            self._insert_revision(head.number + 1, canonical, author, message, head.number)
            self.db.notify(NOTIFY_CHANNEL, str(head.number + 1))
        return self.revision(head.number + 1)

    # -- members -----------------------------------------------------------------------
    def register_member(self, name: str, address: str, version: str) -> None:
        now = _ts(self.now())
        with self.db.transaction("register this member"):
            self.db.query("DELETE FROM members WHERE name = ?", (name,))
            self.db.query(
                "INSERT INTO members (name, address, version, applied_revision, state, "
                "description, heartbeat_at, started_at) VALUES (?, ?, ?, 0, 'Pending', "
                "'starting', ?, ?)",
                (name, address, version, now, now),
            )

    def heartbeat(self, name: str, applied_revision: int, state: str, description: str) -> bool:
        """Record what a member runs; False when it is not registered (it should register
        again: its row was removed, e.g. by a member of the same name that stopped)."""
        with self.db.transaction("record a heartbeat"):
            rows = self.db.query(
                "UPDATE members SET applied_revision = ?, state = ?, description = ?, "
                "heartbeat_at = ? WHERE name = ? RETURNING name",
                (applied_revision, state, description, _ts(self.now()), name),
            )
        return bool(rows)

    def remove_member(self, name: str) -> bool:
        with self.db.transaction("remove a member"):
            found = bool(self.db.query("SELECT 1 FROM members WHERE name = ?", (name,)))
            self.db.query("DELETE FROM members WHERE name = ?", (name,))
            return found

    def members(self, *, unreachable_after: float = 15.0) -> list[MemberStatus]:
        now = self.now()
        head = self.head_number()
        rows = self.db.read(
            "SELECT name, address, version, applied_revision, state, description, "
            "heartbeat_at, started_at FROM members ORDER BY name",
            action="read the members",
        )
        out = []
        for r in rows:
            beat = _dt(r[6])
            applied = int(r[3])
            state: State
            if now - beat > timedelta(seconds=unreachable_after):
                state = "Unreachable"
                desc = (
                    f"No heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC "
                    f"({int((now - beat).total_seconds())} s); the member is down or cannot "
                    "reach the store."
                )
            elif r[4] == "Error":
                state, desc = "Error", r[5]
            elif applied < head:
                state = "Pending"
                desc = f"Running revision {applied}; revision {head} is being loaded."
            else:
                state, desc = "Synced", SYNCED_TEXT
            out.append(MemberStatus(r[0], r[1], r[2], applied, state, desc, beat, _dt(r[7])))
        return out

    # -- learned exceptions ------------------------------------------------------------
    def learn(
        self,
        host: str,
        port: int,
        reason: str,
        ttl_seconds: float,
        now: datetime | None = None,
    ) -> LearnedException:
        """Record (or renew) a server to tunnel: hits +1, last seen and expiry move on."""
        now = now or self.now()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.db.transaction("record a learned exception"):
            rows = self.db.query(
                "SELECT first_seen, hits, expires_at FROM learned_exceptions "
                "WHERE host = ? AND port = ?",
                (host, port),
            )
            if rows and _dt(rows[0][2]) > now:
                first, hits = _dt(rows[0][0]), int(rows[0][1]) + 1
            else:
                first, hits = now, 1
            self.db.query(
                "DELETE FROM learned_exceptions WHERE host = ? AND port = ?", (host, port)
            )
            self.db.query(
                "INSERT INTO learned_exceptions (host, port, reason, first_seen, last_seen, "
                "hits, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (host, port, reason, _ts(first), _ts(now), hits, _ts(expires)),
            )
        return LearnedException(host, port, reason, first, now, hits, expires)

    def learned(self, now: datetime | None = None) -> list[LearnedException]:
        """The unexpired learned exceptions, by host and port."""
        rows = self.db.read(
            "SELECT host, port, reason, first_seen, last_seen, hits, expires_at "
            "FROM learned_exceptions WHERE expires_at > ? ORDER BY host, port",
            (_ts(now or self.now()),),
            action="read learned exceptions",
        )
        return [
            LearnedException(r[0], int(r[1]), r[2], _dt(r[3]), _dt(r[4]), int(r[5]), _dt(r[6]))
            for r in rows
        ]

    def is_learned(self, host: str, port: int, now: datetime | None = None) -> bool:
        rows = self.db.read(
            "SELECT 1 FROM learned_exceptions WHERE host = ? AND port = ? AND expires_at > ?",
            (host, port, _ts(now or self.now())),
            action="read learned exceptions",
        )
        return bool(rows)

    def forget(self, host: str, port: int) -> bool:
        with self.db.transaction("forget a learned exception"):
            found = bool(
                self.db.query(
                    "SELECT 1 FROM learned_exceptions WHERE host = ? AND port = ?", (host, port)
                )
            )
            self.db.query(
                "DELETE FROM learned_exceptions WHERE host = ? AND port = ?", (host, port)
            )
            return found

    def forget_all(self) -> int:
        with self.db.transaction("forget learned exceptions"):
            count = len(
                self.db.query(
                    "SELECT 1 FROM learned_exceptions WHERE expires_at > ?", (_ts(self.now()),)
                )
            )
            self.db.query("DELETE FROM learned_exceptions")
            return count

    # -- admin console users and API tokens ----------------------------------------------
    _CRED_COLUMNS = "kind, name, secret_hash, created_at"

    @staticmethod
    def _credential(row: tuple[Any, ...]) -> AdminCredential:
        return AdminCredential(row[0], row[1], row[2], _dt(row[3]))

    def put_admin_credential(
        self, kind: CredentialKind, name: str, secret_hash: str, *, replace: bool = True
    ) -> bool:
        """Store a user or token (names compare without case).  True when it is new;
        an existing one is replaced, or left as it is when ``replace`` is False."""
        with self.db.transaction(f"store an admin {kind}"):
            found = bool(
                self.db.query(
                    "SELECT 1 FROM admin_credentials WHERE kind = ? AND lower(name) = lower(?)",
                    (kind, name),
                )
            )
            if found and not replace:
                return False
            self.db.query(
                "DELETE FROM admin_credentials WHERE kind = ? AND lower(name) = lower(?)",
                (kind, name),
            )
            self.db.query(
                f"INSERT INTO admin_credentials ({self._CRED_COLUMNS}) VALUES (?, ?, ?, ?)",
                (kind, name, secret_hash, _ts(self.now())),
            )
            return not found

    def remove_admin_credential(self, kind: CredentialKind, name: str) -> bool:
        with self.db.transaction(f"remove an admin {kind}"):
            rows = self.db.query(
                "DELETE FROM admin_credentials WHERE kind = ? AND lower(name) = lower(?) "
                "RETURNING name",
                (kind, name),
            )
            return bool(rows)

    def admin_credentials(self, kind: CredentialKind | None = None) -> list[AdminCredential]:
        """Users and tokens by kind and name (with their hashes: never show those)."""
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self.db.read(
            f"SELECT {self._CRED_COLUMNS} FROM admin_credentials {where} "
            "ORDER BY kind DESC, lower(name)",
            params,
            action="read the admin users",
        )
        return [self._credential(r) for r in rows]

    def admin_credential(self, kind: CredentialKind, name: str) -> AdminCredential | None:
        rows = self.db.read(
            f"SELECT {self._CRED_COLUMNS} FROM admin_credentials "
            "WHERE kind = ? AND lower(name) = lower(?)",
            (kind, name),
            action="read the admin users",
        )
        return self._credential(rows[0]) if rows else None

    def admin_token(self, secret_hash: str) -> AdminCredential | None:
        """The token whose SHA-256 is ``secret_hash`` (verifies an API token), or None."""
        rows = self.db.read(
            f"SELECT {self._CRED_COLUMNS} FROM admin_credentials "
            "WHERE kind = 'token' AND secret_hash = ?",
            (secret_hash,),
            action="check an API token",
        )
        return self._credential(rows[0]) if rows else None


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def open_store(url: str | None, home: Home, *, now: Clock = _utcnow) -> Store:
    """``postgresql://…`` → PostgreSQL; a path → that SQLite file; None → the home's."""
    if is_postgres(url):
        assert url is not None
        return Store(PostgresBackend(url), now=now)
    path = Path(url).expanduser() if url else home.store_path
    return Store(SqliteBackend(path), now=now)
