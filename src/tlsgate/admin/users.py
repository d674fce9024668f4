"""Admin users and API tokens of the console, kept in the configuration store.

Users have argon2id password hashes; API tokens are random strings shown once, of which
the store keeps only the SHA-256.  Both live in the store's ``admin_credentials`` table,
so every member of a shared (PostgreSQL) store accepts the same admins, and a user or
token added or removed with ``tlsgate admin …`` counts at once on every member.  There
is no default account.

Before the store held them, users were in ``HOME/admin-users.json``; a member imports
that file into the store once (:func:`import_users_file`) and leaves it in place.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tlsgate.config.home import Home
from tlsgate.errors import ConfigError, UsageError
from tlsgate.policy.auth import hash_password, verify
from tlsgate.store import Store

FILE_NAME = "admin-users.json"
IMPORTED_MARK = "admin-users.json.imported"
"""Written next to the old file once its users are in the store (never imported twice,
so a user removed from the store does not come back at the next start)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ADD_USER_HINT = "tlsgate admin add-user NAME"
ADD_TOKEN_HINT = "tlsgate admin add-token NAME"
TOKEN_PREFIX = "tlsg_"
"""Marks a tlsgate API token (secret scanners and people recognise it)."""


@dataclass(frozen=True, slots=True)
class AdminUser:
    name: str
    password_hash: str


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise UsageError(
            f"{name!r} is not a valid admin {what} name",
            fix="use letters, digits, '.', '_', '@' or '-' (at most 64 characters)",
        )


# -- users ---------------------------------------------------------------------------------


def load_users(store: Store) -> dict[str, AdminUser]:
    """Lower-case name → user; empty when no admin user exists."""
    return {
        c.name.lower(): AdminUser(c.name, c.secret_hash) for c in store.admin_credentials("user")
    }


def has_users(store: Store) -> bool:
    return bool(store.admin_credentials("user"))


def user_exists(store: Store, name: str) -> bool:
    return store.admin_credential("user", name) is not None


def add_user(store: Store, name: str, password: str) -> bool:
    """Create or replace ``name``'s password; True when the user is new."""
    _check_name(name, "user")
    if len(password) < 8:
        raise UsageError("the password is too short", fix="use at least 8 characters")
    return store.put_admin_credential("user", name, hash_password(password))


def remove_user(store: Store, name: str) -> None:
    """Remove a user; its open console sessions end at their next request."""
    if not store.remove_admin_credential("user", name):
        raise UsageError(
            f"there is no admin user {name!r}", fix="see 'tlsgate admin list' for the users"
        )


def check_password(store: Store, name: str, password: str) -> AdminUser | None:
    """The user when ``password`` is right (constant work for unknown names), else None."""
    found = store.admin_credential("user", name)
    hashes = {found.name.lower(): found.secret_hash} if found else {}
    if verify(hashes, name, password):
        assert found is not None
        return AdminUser(found.name, found.secret_hash)
    return None


# -- API tokens ----------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What the store keeps of a token.  SHA-256 without salt is enough: a token is 256
    random bits, not a password someone chose, so it cannot be guessed from its hash."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(store: Store, name: str) -> str:
    """A new random API token named ``name``; returned once, only its hash is stored."""
    _check_name(name, "token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if not store.put_admin_credential("token", name, token_hash(token), replace=False):
        raise UsageError(
            f"an API token named {name!r} exists",
            fix=f"remove it first with 'tlsgate admin remove-token {name}', or choose another name",
        )
    return token


def remove_token(store: Store, name: str) -> None:
    if not store.remove_admin_credential("token", name):
        raise UsageError(
            f"there is no API token {name!r}", fix="see 'tlsgate admin list' for the tokens"
        )


def check_token(store: Store, token: str) -> str | None:
    """The token's name when ``token`` is a valid API token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    found = store.admin_token(token_hash(token))
    return found.name if found else None


# -- the file of older versions ------------------------------------------------------------


def users_file(home: Home) -> Path:
    return home.root / FILE_NAME


def load_users_file(home: Home) -> dict[str, AdminUser]:
    """The users of ``HOME/admin-users.json`` (older versions); empty without the file."""
    path = users_file(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [(str(e["name"]), str(e["password_hash"])) for e in data.get("users", [])]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the admin users: {exc}",
            fix=f"fix the file, or move it away and create the users with '{ADD_USER_HINT}'",
        ) from None
    return {name.lower(): AdminUser(name, pw_hash) for name, pw_hash in entries}


def import_users_file(home: Home, store: Store) -> list[str] | None:
    """Copy ``HOME/admin-users.json``'s users into the store, once.

    Returns the names copied (a user the store already has keeps its store password), or
    None when there is nothing to do: no file, or it was imported before.  The file is
    left in place; a mark next to it records the import.
    """
    mark = home.root / IMPORTED_MARK
    if mark.exists():
        return None
    users = load_users_file(home)
    if not users and not users_file(home).exists():
        return None
    copied = [
        u.name
        for u in users.values()
        if store.put_admin_credential("user", u.name, u.password_hash, replace=False)
    ]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    mark.write_text(
        f"{FILE_NAME} was imported into the store {store.location} at {stamp}; "
        "the admin users live in the store now ('tlsgate admin list').\n",
        encoding="utf-8",
    )
    return copied
