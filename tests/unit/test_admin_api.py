"""The admin API through Starlette's TestClient: access control, CSRF, staging and
applying like the CLI, conflicts, learned servers, rules, the log, the CA, the pages."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from tests.peers.tlsgate import cli
from tlsgate.admin.actions import StoreAccess
from tlsgate.admin.app import create_app
from tlsgate.admin.users import add_user, load_users
from tlsgate.config.home import Home
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import open_log_sink
from tlsgate.policy.inspection import CLIENT_CERT_REASON
from tlsgate.store import ChangeOp, open_store

PASSWORD = "correct horse battery"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def add_admin(home: Home, name: str = "alice", password: str = PASSWORD) -> None:
    with StoreAccess(home, None).opened() as store:
        add_user(store, name, password)


@pytest.fixture
def client(home: Home) -> TestClient:
    add_admin(home)
    return TestClient(create_app(home, None))


def login(client: TestClient, name: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def test_without_an_admin_user_everything_is_refused(home):
    client = TestClient(create_app(home, None))
    r = client.get("/api/inspection")
    assert r.status_code == 401
    assert "tlsgate admin add-user NAME" in r.json()["fix"]
    r = client.post("/api/login", json={"name": "admin", "password": "admin"})
    assert r.status_code == 401
    page = client.get("/login")
    assert "No admin user exists" in page.text and "tlsgate admin add-user NAME" in page.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_unauthenticated_requests_are_refused(client):
    for path in ("/api/inspection", "/api/staged", "/api/log", "/api/ca.pem", "/api/members"):
        assert client.get(path).status_code == 401, path
    r = client.post("/api/inspection/exceptions/source", json={"value": "10.0.0.5"})
    assert r.status_code == 401
    assert client.get("/inspection", follow_redirects=False).status_code == 303


def test_login_sets_a_strict_http_only_cookie_and_wrong_passwords_fail(client):
    assert client.post("/api/login", json={"name": "alice", "password": "nope"}).status_code == 401
    assert client.post("/api/login", json={"name": "bob", "password": PASSWORD}).status_code == 401
    r = client.post("/api/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert client.get("/api/session").json()["user"] == "alice"


def test_secure_cookie_when_served_over_tls(home):
    add_admin(home)
    client = TestClient(create_app(home, None, tls=True), base_url="https://testserver")
    r = client.post("/api/login", json={"name": "alice", "password": PASSWORD})
    assert "secure" in r.headers["set-cookie"].lower()


def test_changes_need_the_csrf_token(client):
    csrf = login(client)
    body = {"value": "10.0.0.5"}
    assert client.post("/api/inspection/exceptions/source", json=body).status_code == 403
    bad = {"X-CSRF-Token": "x" + csrf["X-CSRF-Token"]}
    assert (
        client.post("/api/inspection/exceptions/source", json=body, headers=bad).status_code == 403
    )
    assert client.post("/api/discard").status_code == 403
    assert client.post("/ui/discard").status_code == 403
    assert client.get("/api/staged").json()["count"] == 0
    r = client.post("/api/inspection/exceptions/source", json=body, headers=csrf)
    assert r.status_code == 200 and r.json() == {"staged": 1}


def test_login_is_rate_limited(client):
    for _ in range(5):
        client.post("/api/login", json={"name": "alice", "password": "wrong"})
    r = client.post("/api/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0


def test_source_exception_is_staged_then_applied_as_a_revision(client, home):
    csrf = login(client)
    r = client.post(
        "/api/inspection/exceptions/source", json={"value": "10.0.0.0/24"}, headers=csrf
    )
    assert r.json() == {"staged": 1}
    staged = client.get("/api/staged").json()
    assert staged["count"] == 1 and staged["revision"] == 1
    assert staged["changes"][0]["path"] == "inspection.source_exceptions"
    assert "alice@" in staged["changes"][0]["author"]
    assert '+source_exceptions = ["10.0.0.0/24"]' in staged["diff"].replace("'", '"')
    view = client.get("/api/inspection").json()
    assert view["applied"]["source_exceptions"] == []
    assert view["staged"]["source_exceptions"] == ["10.0.0.0/24"]
    page = client.get("/")
    assert "1 change not applied" in page.text
    r = client.post("/api/apply", json={"message": "dirsync", "expected_revision": 1}, headers=csrf)
    assert r.status_code == 200, r.text
    assert r.json()["number"] == 2 and r.json()["message"] == "dirsync"
    with _opened(home) as store:
        assert store.applied_config().inspection.source_exceptions == ["10.0.0.0/24"]
        assert store.head().author.startswith("alice@")
    assert client.get("/api/inspection").json()["applied"]["source_exceptions"] == ["10.0.0.0/24"]
    assert "not applied" not in client.get("/").text
    assert [h["number"] for h in client.get("/api/history").json()] == [2, 1]


def _opened(home: Home):
    from contextlib import closing

    return closing(open_store(None, home))


def test_invalid_exception_is_refused_with_the_reason(client):
    csrf = login(client)
    r = client.post("/api/inspection/exceptions/source", json={"value": "10.0.0.300"}, headers=csrf)
    assert r.status_code == 400
    assert "not an IP address or CIDR" in r.json()["error"]
    r = client.post("/api/inspection/exceptions/printer", json={"value": "x"}, headers=csrf)
    assert r.status_code == 422


def test_apply_on_a_stale_revision_is_a_conflict(client, home):
    csrf = login(client)
    client.post(
        "/api/inspection/exceptions/destination", json={"value": "Bank.Example."}, headers=csrf
    )
    with _opened(home) as store:  # another admin applies meanwhile (from the CLI)
        store.stage([ChangeOp("set", "inspection.on_client_certificate", "deny")], "bob")
        store.apply("bob's change", "bob")
    r = client.post("/api/apply", json={"message": "", "expected_revision": 1}, headers=csrf)
    assert r.status_code == 409
    assert "revision 2 was applied by bob" in r.json()["error"]
    # bob's apply took every staged change, alice's included (staging is shared)
    assert client.get("/api/staged").json()["count"] == 0
    r = client.post("/api/apply", json={"expected_revision": 2}, headers=csrf)
    assert r.status_code == 400 and "no staged changes" in r.json()["error"]


def test_apply_keeps_staged_changes_on_conflict(client, home):
    csrf = login(client)
    client.post("/api/inspection/exceptions/source", json={"value": "10.1.1.1"}, headers=csrf)
    with _opened(home) as store:
        store.apply_document(store.head().document, "rollback-ish", "bob")
    assert client.post("/api/apply", json={"expected_revision": 1}, headers=csrf).status_code == 409
    assert client.get("/api/staged").json()["count"] == 1
    r = client.post("/api/apply", json={"expected_revision": 2}, headers=csrf)
    assert r.status_code == 200 and r.json()["number"] == 3


def test_settings_discard_and_rollback(client):
    csrf = login(client)
    assert client.put("/api/inspection/enabled", json={"enabled": False}, headers=csrf).json() == {
        "staged": 1
    }
    r = client.put("/api/inspection/on-client-certificate", json={"action": "deny"}, headers=csrf)
    assert r.json() == {"staged": 2}
    assert (
        client.put(
            "/api/inspection/on-client-certificate", json={"action": "allow"}, headers=csrf
        ).status_code
        == 422
    )
    assert client.post("/api/discard", headers=csrf).json() == {"discarded": 2}
    client.put("/api/inspection/enabled", json={"enabled": False}, headers=csrf)
    assert client.post("/api/apply", json={}, headers=csrf).json()["number"] == 2
    assert client.get("/api/inspection").json()["applied"]["enabled"] is False
    r = client.post("/api/rollback", json={"revision": 1}, headers=csrf)
    assert r.json()["number"] == 3 and r.json()["message"] == "rollback to revision 1"
    assert client.get("/api/inspection").json()["applied"]["enabled"] is True
    assert client.post("/api/rollback", json={"revision": 9}, headers=csrf).status_code == 400


def test_rules_add_move_disable_remove(client):
    csrf = login(client)
    rule = {
        "name": "Block ads",
        "action": "deny",
        "sources": ["any"],
        "destinations": ["*.ads.example"],
    }
    r = client.post("/api/rules", json={"rule": rule, "position": 1}, headers=csrf)
    assert r.status_code == 200, r.text
    names = [x["name"] for x in client.get("/api/rules").json()["staged"]]
    assert names[0] == "Block ads"
    assert (
        client.post(
            "/api/rules/Block ads/move", json={"position": len(names)}, headers=csrf
        ).status_code
        == 200
    )
    assert [x["name"] for x in client.get("/api/rules").json()["staged"]][-1] == "Block ads"
    client.post("/api/rules/Block ads/disable", headers=csrf)
    staged = {x["name"]: x for x in client.get("/api/rules").json()["staged"]}
    assert staged["Block ads"]["enabled"] is False
    r = client.post("/api/rules/Default rule/disable", headers=csrf)
    assert r.status_code == 400 and "built in" in r.json()["error"]
    assert client.delete("/api/rules/Block ads", headers=csrf).status_code == 200
    assert "Block ads" not in [x["name"] for x in client.get("/api/rules").json()["staged"]]
    assert client.delete("/api/rules/nope", headers=csrf).status_code == 400
    assert any(s["name"] == "Internal" for s in client.get("/api/sets").json())


def test_learned_forget_and_make_permanent(client, home):
    with _opened(home) as store:
        store.learn("mtls.example", 443, CLIENT_CERT_REASON, 3600)
        store.learn("api.example", 8443, CLIENT_CERT_REASON, 3600)
    csrf = login(client)
    learned = client.get("/api/learned").json()
    assert {(e["host"], e["port"]) for e in learned} == {
        ("mtls.example", 443),
        ("api.example", 8443),
    }
    r = client.post("/api/learned/forget", json={"host": "mtls.example", "port": 443}, headers=csrf)
    assert r.status_code == 200
    assert [e["host"] for e in client.get("/api/learned").json()] == ["api.example"]
    r = client.post("/api/learned/forget", json={"host": "mtls.example", "port": 443}, headers=csrf)
    assert r.status_code == 400
    r = client.post(
        "/api/learned/make-permanent", json={"host": "api.example", "port": 8443}, headers=csrf
    )
    assert r.json() == {"staged": 1}
    assert client.get("/api/inspection").json()["staged"]["destination_exceptions"] == [
        "api.example"
    ]


def _record(**kw) -> LogRecord:
    base = dict(member="m1", client_ip="127.0.0.1", dest_host="example.test", dest_port=443)
    base.update(kw)
    return LogRecord(**base)


def test_log_query_detail_and_dashboard_stats(client, home):
    now = datetime.now(UTC)
    records = [
        _record(
            method="GET",
            url="https://example.test/",
            status=200,
            inspection="inspect",
            protocol="https-inspect",
            bytes_sent=1000,
            bytes_received=200,
            rule="Allow web access",
        ),
        _record(
            method="CONNECT",
            dest_host="mtls.test",
            status=0,
            inspection="tunnel",
            inspection_reason=CLIENT_CERT_REASON,
            protocol="SSL-tunnel",
            bytes_sent=50,
        ),
        _record(
            method="GET",
            url="http://blocked.test/",
            dest_host="blocked.test",
            status=12202,
            action="Denied",
            rule="Block",
            client_ip="10.0.0.9",
        ),
        _record(method="GET", url="http://old.test/", status=200, time=now - timedelta(hours=3)),
    ]
    sink = open_log_sink(None, home)
    sink.write(records)
    sink.close()
    login(client)
    rows = client.get("/api/log").json()
    assert {r["request_id"] for r in rows} == {r.request_id for r in records}
    assert [r["dest_host"] for r in client.get("/api/log", params={"status": "12202"}).json()] == [
        "blocked.test"
    ]
    assert len(client.get("/api/log", params={"source": "10.0.0.0/8"}).json()) == 1
    assert len(client.get("/api/log", params={"since": "1h"}).json()) == 3
    assert client.get("/api/log", params={"since": "yesterday"}).status_code == 400
    detail = client.get(f"/api/log/{records[2].request_id}").json()
    assert "Rule: Block" in detail["detail"] and detail["record"]["status"] == 12202
    assert client.get("/api/log/nope").status_code == 404
    stats = client.get("/api/stats", params={"minutes": 60}).json()
    assert stats["totals"] == {
        "requests": 3,
        "bytes": 1250,
        "inspected": 1,
        "tunnelled": 1,
        "denied": 1,
    }
    assert stats["top_denied_rules"] == [{"rule": "Block", "count": 1}]
    assert stats["client_certificate_tunnels"][0]["destination"] == "mtls.test:443"
    assert len(stats["minutes"]) == 60
    page = client.get(f"/log/{records[1].request_id}")
    assert CLIENT_CERT_REASON in page.text
    rows_html = client.get("/ui/log/rows", params={"host": "mtls.test"}).text
    assert "mtls.test" in rows_html and "blocked.test" not in rows_html


def test_ca_download(client, home):
    login(client)
    pem = client.get("/api/ca.pem")
    assert pem.status_code == 200 and "attachment" in pem.headers["content-disposition"]
    der = client.get("/api/ca.der").content
    assert x509.load_pem_x509_certificate(pem.content) == x509.load_der_x509_certificate(der)
    assert (home.root / "ca" / "ca.pem").read_bytes() == pem.content


def test_pages_render_with_the_staged_banner(client):
    csrf = login(client)
    client.post("/api/inspection/exceptions/source", json={"value": "10.0.0.5"}, headers=csrf)
    for path in ("/", "/inspection", "/rules", "/log", "/configuration", "/ca"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "1 change not applied" in r.text, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "10.0.0.5" in client.get("/inspection").text
    assert "+source_exceptions" in client.get("/configuration").text


def test_console_form_change_stages_and_refreshes(client):
    csrf = login(client)
    r = client.post(
        "/ui/inspection/exception",
        data={"kind": "source", "action": "add", "value": "10.2.0.0/16"},
        headers=csrf,
    )
    assert r.status_code == 204 and r.headers["hx-refresh"] == "true"
    assert "Staged. 1 change(s)" in client.get("/inspection").text
    r = client.post(
        "/ui/inspection/exception",
        data={"kind": "source", "action": "add", "value": "nope"},
        headers=csrf,
    )
    assert r.headers["hx-retarget"] == "#flash" and "not an IP address" in r.text


def test_console_login_form(client):
    r = client.post("/login", data={"name": "alice", "password": "wrong"})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    r = client.post(
        "/login",
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 401 and "another site" in r.text
    r = client.post("/login", data={"name": "alice", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200


def test_openapi_document(client):
    doc = client.get("/api/openapi.json").json()
    assert "/api/apply" in doc["paths"] and "/api/log/{request_id}" in doc["paths"]
    assert not any(p.startswith("/ui") or p == "/" for p in doc["paths"])


def test_add_user_command_keeps_only_the_hash_in_the_store(tmp_path):
    home = tmp_path / "h"
    r = cli(home, "admin", "add-user", "root-admin", "--password-stdin", input="s3cret-pass\n")
    assert r.returncode == 0, r.stderr
    assert "created admin 'root-admin' in the store" in r.stdout
    db = Home(home).store_path
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the store's directory is private
    with StoreAccess(Home(home), None).opened() as store:
        user = load_users(store)["root-admin"]
    assert user.password_hash.startswith("$argon2")
    assert b"s3cret-pass" not in db.read_bytes()
    r = cli(home, "admin", "add-user", "x", "--password-stdin", input="short\n")
    assert r.returncode == 2 and "too short" in r.stderr
