"""Smoke tests of the PostgreSQL test peer itself (tests/peers/postgres.py)."""

from __future__ import annotations

import psycopg
import pytest

from tests.peers.postgres import PostgresServer


def test_session_server_serves_the_tlsgate_database(postgres: PostgresServer) -> None:
    assert postgres.dsn == f"postgresql://postgres@127.0.0.1:{postgres.port}/tlsgate"
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("SELECT current_database(), inet_server_addr()::text").fetchone()
    assert row == ("tlsgate", "127.0.0.1/32")


def test_fresh_database_is_empty_and_private(fresh_pg_dsn: str) -> None:
    assert "/test_" in fresh_pg_dsn
    with psycopg.connect(fresh_pg_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (x int)")


def test_stop_makes_it_unreachable_and_start_keeps_the_data(
    postgres: PostgresServer, fresh_pg_dsn: str
) -> None:
    with psycopg.connect(fresh_pg_dsn) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(fresh_pg_dsn, connect_timeout=2)
    postgres.start()
    with psycopg.connect(fresh_pg_dsn) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


def test_private_server_is_separate(
    private_postgres: PostgresServer, postgres: PostgresServer
) -> None:
    assert private_postgres.port != postgres.port
    private_postgres.stop()
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
