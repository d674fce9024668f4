"""Admin users and API tokens in the configuration store (SQLite and PostgreSQL): the
store's methods and its schema migration, API tokens on the API (no session, no CSRF),
users shared by every member of a store, the import of an older ``admin-users.json``,
and the ``tlsgate admin`` commands."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.peers.tlsgate import cli
from tests.unit.store_helpers import (  # noqa: F401  (fixtures)
    Clock,
    clock_fixture,
    home_fixture,
    store_fixture,
    url_fixture,
)
from tlsgate.admin import users
from tlsgate.admin.app import create_app
from tlsgate.config.home import Home
from tlsgate.errors import ConfigError, UsageError
from tlsgate.policy.auth import hash_password
from tlsgate.store import Store, open_store
from tlsgate.store.backend import MIGRATIONS, SCHEMA_VERSION

PASSWORD = "correct horse battery"


def new_client(home: Home, url: str) -> TestClient:
    return TestClient(create_app(home, url))


def login(client: TestClient, name: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


# -- the store -------------------------------------------------------------------------------


def test_store_keeps_users_and_tokens_by_kind_and_name_ignoring_case(store: Store, clock: Clock):
    assert store.admin_credentials() == []
    assert store.put_admin_credential("user", "Alice", "h1") is True
    clock.advance(seconds=5)
    assert store.put_admin_credential("user", "alice", "h2") is False  # replaced
    assert store.put_admin_credential("user", "ALICE", "h3", replace=False) is False
    assert store.put_admin_credential("token", "alice", "t1") is True  # another kind
    creds = store.admin_credentials()
    assert [(c.kind, c.name, c.secret_hash) for c in creds] == [
        ("user", "alice", "h2"),
        ("token", "alice", "t1"),
    ]
    assert creds[0].created_at == clock.t
    assert store.admin_credential("user", "ALICE") == creds[0]
    assert [c.name for c in store.admin_credentials("token")] == ["alice"]
    assert store.admin_token("t1") == creds[1]
    assert store.admin_token("h2") is None  # a user's hash is never a token
    assert store.remove_admin_credential("token", "Alice") is True
    assert store.remove_admin_credential("token", "alice") is False
    assert store.admin_token("t1") is None
    assert store.admin_credential("user", "bob") is None


def test_users_and_tokens_through_the_admin_functions(store: Store):
    assert not users.has_users(store)
    assert users.add_user(store, "alice", PASSWORD) is True
    assert users.add_user(store, "Alice", "another password") is False
    assert users.check_password(store, "alice", PASSWORD) is None
    assert users.check_password(store, "ALICE", "another password") == users.AdminUser(
        "Alice",
        store.admin_credential("user", "alice").secret_hash,  # type: ignore[union-attr]
    )
    assert users.check_password(store, "nobody", "another password") is None
    token = users.add_token(store, "ci")
    assert token.startswith("tlsg_") and len(token) > 40
    assert users.check_token(store, token) == "ci"
    assert users.check_token(store, token + "x") is None
    assert users.check_token(store, users.token_hash(token)) is None  # the hash is no token
    stored = store.admin_credential("token", "ci")
    assert stored is not None and stored.secret_hash == users.token_hash(token)
    assert token not in json.dumps([c.secret_hash for c in store.admin_credentials()])
    with pytest.raises(UsageError, match="exists"):
        users.add_token(store, "CI")
    with pytest.raises(UsageError, match="not a valid admin token name"):
        users.add_token(store, "no spaces")
    users.remove_token(store, "ci")
    assert users.check_token(store, token) is None
    with pytest.raises(UsageError, match="no API token 'ci'"):
        users.remove_token(store, "ci")
    users.remove_user(store, "alice")
    assert not users.has_users(store)


def test_a_store_of_schema_1_gains_the_credentials_table(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    for sql in MIGRATIONS[0]["common"] + MIGRATIONS[0]["sqlite"]:
        conn.execute(sql)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'migrated')")
    conn.commit()
    conn.close()
    assert SCHEMA_VERSION >= 2
    store = open_store(str(path), Home(tmp_path / "home"))
    try:
        assert store.put_admin_credential("user", "alice", "h")
        versions = store.db.read("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        store.close()


# -- API tokens on the API -----------------------------------------------------------------


def on_store(url: str, home: Home, fn):  # type: ignore[no-untyped-def]
    store = open_store(url, home)
    try:
        return fn(store)
    finally:
        store.close()


def test_api_token_authenticates_without_session_or_csrf(url: str, home: Home):
    token = on_store(url, home, lambda s: users.add_token(s, "ci"))
    client = new_client(home, url)
    bearer = {"Authorization": f"Bearer {token}"}
    r = client.get("/api/session", headers=bearer)
    assert r.status_code == 200 and r.json()["user"] == "ci"
    assert "set-cookie" not in r.headers
    # A change: no session cookie and no X-CSRF-Token, yet accepted.
    r = client.post("/api/inspection/exceptions/source", json={"value": "10.0.0.5"}, headers=bearer)
    assert r.status_code == 200 and r.json() == {"staged": 1}
    staged = client.get("/api/staged", headers=bearer).json()
    assert staged["changes"][0]["author"].endswith("(API token)")
    assert staged["changes"][0]["author"].startswith("ci@")
    r = client.post("/api/apply", json={"message": "from CI"}, headers=bearer)
    assert r.status_code == 200, r.text
    assert r.json()["author"].startswith("ci@")


def test_wrong_absent_or_removed_tokens_are_refused(url: str, home: Home):
    token = on_store(url, home, lambda s: users.add_token(s, "ci"))
    client = new_client(home, url)
    change = {"json": {"value": "10.0.0.5"}}
    for header in (
        f"Bearer {token}x",
        f"Bearer {token[:-1]}",
        "Bearer ",
        "Bearer tlsg_",
        f"Basic {token}",
        token,
    ):
        for method, path, kw in (
            ("GET", "/api/inspection", {}),
            ("POST", "/api/inspection/exceptions/source", change),
        ):
            r = client.request(method, path, headers={"Authorization": header}, **kw)
            assert r.status_code == 401, (header, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "tlsgate admin add-token NAME" in r.json()["fix"]
    r = client.get("/api/inspection")  # no header, no session
    assert r.status_code == 401
    on_store(url, home, lambda s: users.remove_token(s, "ci"))
    r = client.get("/api/inspection", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "unknown or removed" in r.json()["error"]
    assert client.get("/api/staged", headers={"Authorization": "Bearer x"}).status_code == 401
    assert on_store(url, home, lambda s: s.staged()) == []


def test_a_token_does_not_open_the_console_pages(url: str, home: Home):
    token = on_store(url, home, lambda s: users.add_token(s, "ci"))
    on_store(url, home, lambda s: users.add_user(s, "alice", PASSWORD))
    client = new_client(home, url)
    r = client.get("/", headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_a_token_with_a_session_cookie_uses_the_token(url: str, home: Home):
    on_store(url, home, lambda s: users.add_user(s, "alice", PASSWORD))
    client = new_client(home, url)
    login(client)
    assert client.get("/api/session").json()["user"] == "alice"
    r = client.get("/api/session", headers={"Authorization": "Bearer tlsg_wrong"})
    assert r.status_code == 401  # a wrong token is not rescued by the cookie


# -- users shared by the members of one store ----------------------------------------------


def test_members_of_one_store_accept_the_same_admins(url: str, tmp_path: Path):
    # Two members: separate homes (as on two hosts), one store.
    home_a, home_b = Home(tmp_path / "a").ensure(), Home(tmp_path / "b").ensure()
    member_a, member_b = new_client(home_a, url), new_client(home_b, url)
    assert member_b.get("/api/inspection").json()["error"] == "no admin user exists"
    on_store(url, home_a, lambda s: users.add_user(s, "alice", PASSWORD))
    token = on_store(url, home_a, lambda s: users.add_token(s, "ci"))
    login(member_a)
    csrf_b = login(member_b)
    for member in (member_a, member_b):
        assert member.get(
            "/api/inspection", headers={"Authorization": f"Bearer {token}"}
        ).is_success
    # Removed on one host: refused by every member, open sessions included.
    on_store(url, home_a, lambda s: users.remove_user(s, "alice"))
    r = member_b.post("/api/discard", headers=csrf_b)
    assert r.status_code == 401 and "no longer exists" in r.json()["error"]
    assert member_a.get("/api/session").status_code == 401
    r = member_b.post("/api/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 401
    on_store(url, home_b, lambda s: users.add_user(s, "alice", "a new password"))
    assert member_a.get("/api/session").status_code == 401  # the old session stays ended
    login(member_a, password="a new password")


# -- the admin-users.json of older versions ------------------------------------------------


def write_users_file(home: Home, **passwords: str) -> None:
    body = {"users": [{"name": n, "password_hash": hash_password(p)} for n, p in passwords.items()]}
    users.users_file(home).write_text(json.dumps(body))


def test_users_file_is_imported_once_and_left_in_place(url: str, home: Home):
    write_users_file(home, alice=PASSWORD, Bob="bob's password")
    on_store(url, home, lambda s: users.add_user(s, "bob", "set in the store"))
    imported = on_store(url, home, lambda s: users.import_users_file(home, s))
    assert imported == ["alice"]  # bob exists in the store: its store password stays
    assert users.users_file(home).exists()
    mark = (home.root / users.IMPORTED_MARK).read_text()
    assert "imported into the store" in mark
    client = new_client(home, url)
    login(client, "alice")
    login(client, "bob", "set in the store")
    assert (
        client.post("/api/login", json={"name": "bob", "password": "bob's password"}).status_code
        == 401
    )
    # Never again: a user removed from the store does not come back at the next start.
    on_store(url, home, lambda s: users.remove_user(s, "alice"))
    assert on_store(url, home, lambda s: users.import_users_file(home, s)) is None
    assert not on_store(url, home, lambda s: users.user_exists(s, "alice"))


def test_without_a_users_file_nothing_is_imported(url: str, home: Home):
    assert on_store(url, home, lambda s: users.import_users_file(home, s)) is None
    assert not (home.root / users.IMPORTED_MARK).exists()


def test_a_broken_users_file_is_a_one_line_error(url: str, home: Home):
    users.users_file(home).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the admin users"):
        on_store(url, home, lambda s: users.import_users_file(home, s))
    assert not (home.root / users.IMPORTED_MARK).exists()


# -- tlsgate admin ---------------------------------------------------------------------------


def test_admin_commands(url: str, tmp_path: Path):
    home = tmp_path / "h"
    write_users_file(Home(home).ensure(), olduser=PASSWORD)

    def admin(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return cli(home, "admin", *args, store=url, input=input)

    r = admin("add-user", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "imported 1 admin user(s)" in r.stderr
    r = admin("add-token", "ci")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("tlsg_") and "\n" not in token
    assert "shown only now" in r.stderr
    r = admin("add-token", "ci")
    assert r.returncode == 2 and "exists" in r.stderr and "remove-token ci" in r.stderr
    r = admin("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("user" in x and "alice" in x for x in lines)
    assert any("user" in x and "olduser" in x for x in lines)
    assert any("API token" in x and "ci" in x for x in lines)
    assert token not in r.stdout and users.token_hash(token) not in r.stdout
    assert "$argon2" not in r.stdout
    client = new_client(Home(home), url)
    assert client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).is_success
    r = admin("remove-token", "ci")
    assert r.returncode == 0 and "removed API token 'ci'" in r.stdout
    assert (
        client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    r = admin("remove-user", "nobody")
    assert r.returncode == 2 and "no admin user 'nobody'" in r.stderr
    assert admin("remove-user", "alice").returncode == 0
    assert admin("remove-user", "olduser").returncode == 0
    r = admin("list")
    assert "no admin users or API tokens" in r.stdout
