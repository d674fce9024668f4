"""Shared pytest fixtures: real peers (PostgreSQL, nginx, a test PKI) and a tlsgate home.

Session-scoped peers start once per test run and are stopped at the end, whatever
happens. Tests under ``tests/e2e/`` are marked ``e2e`` automatically, so
``pytest -m 'not e2e'`` runs the fast unit tests alone. See docs/testing.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.peers.apache import ApacheServer
from tests.peers.nginx import NginxServer
from tests.peers.pki import CertPair, TestPKI
from tests.peers.postgres import PostgresServer
from tlsgate import build

_E2E_DIR = Path(__file__).parent / "e2e"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test old code: compiled modules older than their sources (an editable
    install not rebuilt), or not the build scripts/test.sh asked for."""
    if stale := build.stale():
        pytest.exit(f"tlsgate: {build.stale_message(stale)}", returncode=2)
    expected = os.environ.get("TLSGATE_EXPECT_BUILD")
    actual = "compiled" if build.compiled() else "pure"
    if expected and expected != actual:
        fix = {
            "compiled": "TLSGATE_COMPILE=yes pip install -e .",
            "pure": "TLSGATE_COMPILE=no pip install -e .",
        }.get(expected, "TLSGATE_EXPECT_BUILD is 'compiled' or 'pure'")
        pytest.exit(
            f"tlsgate: expected the {expected} modules, but {build.describe()} is loaded "
            f"({fix})",
            returncode=2,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (database ``tlsgate``); ``.dsn`` is its URL.

    Tests may ``stop()`` and ``start()`` it to simulate an outage; the ``fresh_pg_dsn``
    fixture restarts it afterwards if a test left it down.
    """
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """DSN of a new, empty database (``test_<random>``) dropped after the test."""
    dsn = postgres.create_database()
    yield dsn
    if not postgres.running:
        postgres.start()
    postgres.drop_database(urlsplit(dsn).path.lstrip("/"))


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (about 2 s to start), for destructive tests."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# -- PKI and nginx ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """The session's test PKI: ``pki.ca_cert`` is the CA to trust; see tests/peers/pki.py."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def client_cert(pki: TestPKI) -> CertPair:
    """The default client certificate (CN "tlsgate test client", issued by the test CA)."""
    return pki.client()


# name -> (certificate preset, protocols, ssl_verify_client); None preset = plain HTTP.
NGINX_BLOCKS: dict[str, tuple[str | None, tuple[str, ...], str]] = {
    "plain": (None, (), "off"),
    "tls": ("valid", ("TLSv1.2", "TLSv1.3"), "off"),
    "tls12": ("valid", ("TLSv1.2",), "off"),
    "tls13": ("valid", ("TLSv1.3",), "off"),
    "expired": ("expired", ("TLSv1.2", "TLSv1.3"), "off"),
    "not_yet_valid": ("not_yet_valid", ("TLSv1.2", "TLSv1.3"), "off"),
    "wrong_name": ("wrong_name", ("TLSv1.2", "TLSv1.3"), "off"),
    "self_signed": ("self_signed", ("TLSv1.2", "TLSv1.3"), "off"),
    "untrusted": ("untrusted", ("TLSv1.2", "TLSv1.3"), "off"),
    "no_server_auth_eku": ("no_server_auth_eku", ("TLSv1.2", "TLSv1.3"), "off"),
    "mtls_tls12": ("valid", ("TLSv1.2",), "on"),
    "mtls_tls13": ("valid", ("TLSv1.3",), "on"),
    "mtls_optional": ("valid", ("TLSv1.2", "TLSv1.3"), "optional"),
    "mtls_optional_no_ca": ("valid", ("TLSv1.2", "TLSv1.3"), "optional_no_ca"),
}


@pytest.fixture(scope="session")
def nginx(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """One nginx for the session with a server block per name in ``NGINX_BLOCKS``.

    ``nginx.url("tls", "/1k.bin")`` is ``https://127.0.0.1:PORT/1k.bin``;
    ``nginx.content("/1k.bin")`` the bytes it serves. Endpoints: tests/peers/nginx.py.
    """
    server = NginxServer(tmp_path_factory.mktemp("nginx"), client_ca=pki.ca_cert)
    for name, (preset, protocols, verify_client) in NGINX_BLOCKS.items():
        tls = pki.preset(preset) if preset is not None else None
        server.add_server(name, tls=tls, protocols=protocols, verify_client=verify_client)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- tlsgate ---------------------------------------------------------------------------


@pytest.fixture
def tlsgate_home(tmp_path: Path) -> Path:
    """An empty directory to use as TLSGATE home (``--home``) for one test."""
    home = tmp_path / "tlsgate-home"
    home.mkdir()
    return home


# -- Apache httpd (late client-certificate requests) -----------------------------------


@pytest.fixture(scope="session")
def apache(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheServer]:
    """Apache with ``SSLVerifyClient require`` for /secure only; see tests/peers/apache.py."""
    server = ApacheServer(tmp_path_factory.mktemp("apache"), pki.preset("valid"), pki.ca_cert)
    try:
        server.start()
        yield server
    finally:
        server.stop()
