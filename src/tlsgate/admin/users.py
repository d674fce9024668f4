"""Admin accounts: ``HOME/admin-users.json`` (mode 0600) holding argon2 hashes.

Written by ``tlsgate admin add-user NAME``; read by the console at every login, so a
user added while the member runs can log in at once.  There is no default account:
with an empty file the console only explains how to create the first one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tlsgate.config.home import Home
from tlsgate.errors import ConfigError, UsageError
from tlsgate.policy.auth import hash_password, verify

FILE_NAME = "admin-users.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ADD_USER_HINT = "tlsgate admin add-user NAME"


@dataclass(frozen=True, slots=True)
class AdminUser:
    name: str
    password_hash: str


def users_file(home: Home) -> Path:
    return home.root / FILE_NAME


def load_users(home: Home) -> dict[str, AdminUser]:
    """Lower-case name → user; empty when the file does not exist."""
    path = users_file(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot read the admin users: {exc}",
            fix=f"fix or delete the file, then run '{ADD_USER_HINT}'",
        ) from None
    users = {}
    for entry in data.get("users", []):
        user = AdminUser(str(entry["name"]), str(entry["password_hash"]))
        users[user.name.lower()] = user
    return users


def add_user(home: Home, name: str, password: str) -> bool:
    """Create or replace ``name``'s password; True when the user is new."""
    if not _NAME.match(name):
        raise UsageError(
            f"{name!r} is not a valid admin user name",
            fix="use letters, digits, '.', '_', '@' or '-' (at most 64 characters)",
        )
    if len(password) < 8:
        raise UsageError("the password is too short", fix="use at least 8 characters")
    home.ensure()
    users = load_users(home)
    new = name.lower() not in users
    users[name.lower()] = AdminUser(name, hash_password(password))
    path = users_file(home)
    tmp = path.with_suffix(".tmp")
    body = {"users": [{"name": u.name, "password_hash": u.password_hash} for u in users.values()]}
    # Created 0600 from the start: the hashes are never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return new


def check_password(users: dict[str, AdminUser], name: str, password: str) -> AdminUser | None:
    """The user when ``password`` is right (constant work for unknown names), else None."""
    hashes = {k: u.password_hash for k, u in users.items()}
    if verify(hashes, name, password):
        return users[name.lower()]
    return None
