"""The admin console over HTTPS (``serve --admin-tls``) and admins shared by the members
of one PostgreSQL store, against real ``tlsgate serve`` processes and curl.

Member A serves the console over TLS with a certificate from its CA and starts with an
older version's ``admin-users.json`` in its home, which it imports into the store;
member B (another home, as on another host) serves it over plain HTTP on the same
store and accepts the same admin and the same API token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import curl
from tests.peers.ports import free_port, wait_for_port
from tests.peers.tlsgate import TlsgateProcess, cli
from tlsgate.policy.auth import hash_password

PASSWORD = "tls-console-password"


def _member(home: Path, store: str, admin_port: int, *extra: str) -> TlsgateProcess:
    return TlsgateProcess(
        home,
        store=store,
        member=home.name,
        extra_args=["--admin", f"127.0.0.1:{admin_port}", *extra],
    )


@pytest.fixture(scope="module")
def members(
    postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TlsgateProcess, int, TlsgateProcess, int]]:
    dsn = postgres.create_database()
    home_a = tmp_path_factory.mktemp("member-a")
    home_b = tmp_path_factory.mktemp("member-b")
    legacy = {"users": [{"name": "alice", "password_hash": hash_password(PASSWORD)}]}
    (home_a / "admin-users.json").write_text(json.dumps(legacy))
    port_a, port_b = free_port(), free_port()
    a = _member(home_a, dsn, port_a, "--admin-tls")
    b = _member(home_b, dsn, port_b)
    try:
        a.start()
        wait_for_port("127.0.0.1", port_a, 15)
        b.start()
        wait_for_port("127.0.0.1", port_b, 15)
        yield a, port_a, b, port_b
    finally:
        a.stop()
        b.stop()
        postgres.drop_database(dsn.rsplit("/", 1)[1])


def https(member: TlsgateProcess, port: int, path: str, *args: str, host: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    extra = ["--resolve", f"{host}:{port}:127.0.0.1"] if host != "127.0.0.1" else []
    return curl(
        "--cacert",
        str(member.ca_cert),
        *extra,
        "-w",
        "\n%{http_code}",
        *args,
        f"https://{host}:{port}{path}",
    )


def test_console_over_tls_with_a_certificate_from_the_ca(members):
    a, port_a, _, _ = members
    a.wait_for_log(f"admin console on https://127.0.0.1:{port_a}/")
    assert "certificate from tlsgate's CA for 127.0.0.1, localhost" in a.output()
    for host in ("127.0.0.1", "localhost"):
        r = https(a, port_a, "/api/session", host=host)
        assert r.returncode == 0, r.stderr  # the certificate verified against the CA
        assert r.stdout.decode().endswith("\n401")
    # Plain HTTP to the TLS port gets no HTTP answer at all.
    r = curl("-w", "%{http_code}", f"http://127.0.0.1:{port_a}/api/session")
    assert r.returncode != 0 and r.stdout.decode() in ("", "000")
    # Not trusting tlsgate's CA: refused by curl.
    r = curl(f"https://127.0.0.1:{port_a}/api/session")
    assert r.returncode == 60, r.stderr


def test_login_over_tls_sets_a_secure_cookie(members):
    a, port_a, _, _ = members
    body = json.dumps({"name": "alice", "password": PASSWORD})
    r = https(a, port_a, "/api/login", "-i", "-H", "Content-Type: application/json", "-d", body)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert text.endswith("\n200")
    cookie = next(x for x in text.splitlines() if x.lower().startswith("set-cookie:")).lower()
    assert "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_the_old_users_file_is_imported_and_shared_with_every_member(members):
    a, _, b, port_b = members
    a.wait_for_log("admin users: imported 1 user(s) (alice)")
    assert (a.home / "admin-users.json").exists()  # left in place
    # Member B never saw the file, yet alice logs in there (plain HTTP on B).
    body = json.dumps({"name": "alice", "password": PASSWORD})
    r = curl(
        "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-d", body,
        f"http://127.0.0.1:{port_b}/api/login",
    )  # fmt: skip
    assert r.stdout.decode().endswith("\n200"), r.stdout
    assert "secure" not in r.stdout.decode().lower()
    r = cli(b.home, "admin", "list", store=b.store)
    assert "alice" in r.stdout


def test_an_api_token_works_on_every_member_until_removed(members):
    a, port_a, b, port_b = members
    r = cli(b.home, "admin", "add-token", "ci-deploy", store=b.store)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    auth = ["-H", f"Authorization: Bearer {token}"]
    r = https(a, port_a, "/api/session", *auth)
    assert r.stdout.decode().endswith("\n200") and '"ci-deploy"' in r.stdout.decode()
    # A change with the token alone: no session, no CSRF token.
    change = [*auth, "-H", "Content-Type: application/json", "-d", '{"value": "10.9.9.9"}']
    r = https(a, port_a, "/api/inspection/exceptions/source", *change)
    assert r.stdout.decode().endswith("\n200"), r.stdout
    r = curl("-w", "\n%{http_code}", *auth, f"http://127.0.0.1:{port_b}/api/staged")
    assert r.stdout.decode().endswith("\n200") and "(API token)" in r.stdout.decode()
    assert cli(a.home, "admin", "remove-token", "ci-deploy", store=a.store).returncode == 0
    r = https(a, port_a, "/api/session", *auth)
    assert r.stdout.decode().endswith("\n401")
    r = curl("-w", "\n%{http_code}", *auth, f"http://127.0.0.1:{port_b}/api/session")
    assert r.stdout.decode().endswith("\n401")


def test_admin_tls_without_a_console_is_a_usage_error(tmp_path):
    r = cli(tmp_path / "h", "serve", "--admin", "off", "--admin-tls")
    assert r.returncode == 2
    assert "--admin-tls" in r.stderr and "Traceback" not in r.stderr
