"""The store's commands through the real CLI entry (click), on a temporary home."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tlsgate.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("TLSGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TLSGATE_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def test_stage_list_apply_history_rollback(run):
    r = run("inspection", "except", "source", "add", "10.1.2.3")
    assert r.exit_code == 0 and "1 change(s) staged" in r.output
    assert "(staged, not applied yet)" in run("inspection", "except", "source", "list").output
    assert '+source_exceptions = ["10.1.2.3"]' in run("diff").output
    r = run("apply", "-m", "dirsync")
    assert r.exit_code == 0 and "applied revision 2" in r.output
    assert run("inspection", "except", "source", "list").output.strip() == "10.1.2.3"
    r = run("inspection", "except", "source", "remove", "10.1.2.3")
    assert "removal staged" in run("inspection", "except", "source", "list").output
    assert run("discard").output.startswith("discarded 1")
    assert "dirsync" in run("history").output
    assert run("rollback", "1").exit_code == 0
    assert "no source exceptions" in run("inspection", "except", "source", "list").output


def test_on_client_certificate_and_show(run):
    assert run("inspection", "on-client-certificate", "deny").exit_code == 0
    shown = run("inspection", "show").output
    assert "tunnel" in shown and "deny" in shown  # applied tunnel, staged deny
    run("apply")
    assert "deny" in run("inspection", "show").output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("inspection", "except", "source", "add", "10.0.0.0/33"), "not an IP address or CIDR"),
        (("inspection", "except", "destination", "add", "http://x/"), "not a host name"),
        (("inspection", "except", "source", "remove", "10.9.9.9"), "is not in"),
        (("inspection", "learned", "forget"), "give HOST:PORT or --all"),
        (("rollback", "42"), "there is no revision 42"),
        (("apply",), "no staged changes"),
    ],
)
def test_mistakes_are_one_line_errors(args, words):
    import os
    import subprocess
    import sys
    import tempfile

    home = tempfile.mkdtemp()
    r = subprocess.run(
        [sys.executable, "-m", "tlsgate", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, TLSGATE_HOME=home),
    )
    assert r.returncode != 0
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_status_without_members_fails(run):
    r = CliRunner().invoke(cli, ["status", "--json"])
    assert r.exit_code == 1
