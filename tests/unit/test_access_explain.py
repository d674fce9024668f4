"""``tlsgate explain``, ``rules list`` and ``sets list`` on a config file or the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tlsgate.commands.policy import POLICY_COMMANDS, explain, rules_list, sets_list
from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import UsageError
from tlsgate.policy.access import AccessFacts, facts_for_url
from tlsgate.policy.access import explain as explain_text

CONFIG = """\
[[domain_sets]]
name = "Partners"
domains = ["*.partner.example"]

[[rules]]
name = "Block ads"
action = "deny"
sources = ["any"]
destinations = ["*.ads.example"]

[[rules]]
name = "Old rule"
action = "allow"
sources = ["any"]
destinations = ["any"]
enabled = false

[[rules]]
name = "Partners"
action = "allow"
sources = ["Internal"]
destinations = ["Partners"]
connect_ports = [443, 8443]

[[rules]]
name = "Allow web access"
action = "allow"
sources = ["Internal"]
destinations = ["any"]
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tlsgate.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def run(*args: str, home: Path) -> str:
    result = CliRunner().invoke(explain, [*args, "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_facts_for_url() -> None:
    [only] = facts_for_url("10.0.0.1", "http://a.example:8080/x?y=1", method="post")
    assert only == AccessFacts(
        "10.0.0.1", None, False, "POST", "http", "a.example", 8080, "/x?y=1", False
    )
    tunnel, inner = facts_for_url("10.0.0.1", "https://a.example/", user="alice")
    assert tunnel == AccessFacts(
        "10.0.0.1", "alice", True, "CONNECT", "https", "a.example", 443, "", True
    )
    assert inner.method == "GET" and inner.path == "/" and not inner.is_connect
    assert facts_for_url("::1", "https://[::1]:8443/", method="CONNECT")[0].host == "::1"
    assert facts_for_url("10.0.0.1", "a.example")[0].scheme == "http"


@pytest.mark.parametrize(
    ("source", "url", "message"),
    [
        ("nobody", "http://a.example/", "--source 'nobody' is not an IP address"),
        ("10.0.0.1", "ftp://a.example/", "give an http:// or https:// URL"),
        ("10.0.0.1", "http://a.example:99999/", "is not a valid URL"),
    ],
)
def test_facts_for_bad_input(source: str, url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        facts_for_url(source, url)


def test_explain_default_policy_allowed(tlsgate_home: Path) -> None:
    out = run("--source", "127.0.0.1", "--url", "http://www.example.com/", home=tlsgate_home)
    assert out == (
        "GET http://www.example.com/ from 127.0.0.1, user anonymous\n"
        "  source network Internal, destination network External\n"
        "  => ALLOWED by rule 'Allow web access'\n"
    )


def test_explain_default_policy_denied(tlsgate_home: Path) -> None:
    out = run("--source", "203.0.113.5", "--url", "http://www.example.com/", home=tlsgate_home)
    assert out.splitlines() == [
        "GET http://www.example.com/ from 203.0.113.5, user anonymous",
        "  source network External, destination network External",
        "  rule 1 'Allow web access': source 203.0.113.5 (External) is not in Internal",
        "  => DENIED (12202) by rule 'Default rule': no rule allows this request; the Default "
        "rule denies it",
    ]


def test_explain_each_earlier_rule(config_file: Path, tlsgate_home: Path) -> None:
    out = run(
        "--source",
        "10.0.0.7",
        "--url",
        "https://www.example.com:8443/a",
        "--config",
        str(config_file),
        home=tlsgate_home,
    )
    connect, inner, inspection = out.strip().split("\n\n")
    assert inspection.startswith("HTTPS inspection: inspect www.example.com:8443")
    assert connect.splitlines() == [
        "CONNECT www.example.com:8443 from 10.0.0.7, user anonymous",
        "  source network Internal, destination network External",
        "  rule 1 'Block ads': destination www.example.com (External) is not in *.ads.example",
        "  rule 2 'Old rule': disabled",
        "  rule 3 'Partners': destination www.example.com (External) is not in Partners",
        "  rule 4 'Allow web access': CONNECT port 8443 is not in connect_ports (443)",
        "  => DENIED (12204) by rule 'Allow web access': CONNECT to port 8443 is not allowed: "
        "rule 'Allow web access' allows CONNECT to port(s) 443 only",
    ]
    assert (
        inner.splitlines()[0] == "GET https://www.example.com:8443/a from 10.0.0.7, user anonymous"
    )
    assert inner.splitlines()[-1] == "  => ALLOWED by rule 'Allow web access'"


def test_explain_partner_port(config_file: Path, tlsgate_home: Path) -> None:
    out = run(
        "--source",
        "10.0.0.7",
        "--url",
        "https://x.partner.example:8443/",
        "--method",
        "CONNECT",
        "--user",
        "alice",
        "--config",
        str(config_file),
        home=tlsgate_home,
    )
    assert out.splitlines()[0] == "CONNECT x.partner.example:8443 from 10.0.0.7, user alice"
    access, inspection = out.strip().split("\n\n")
    assert access.splitlines()[-1] == "  => ALLOWED by rule 'Partners'"
    assert "server asks for a client certificate" in inspection


def test_explain_function_accepts_one_fact() -> None:
    f = facts_for_url("10.0.0.1", "http://x.ads.example/")[0]
    cfg = TlsgateConfig.model_validate(
        {
            "rules": [
                {
                    "name": "Block",
                    "action": "deny",
                    "sources": ["any"],
                    "destinations": ["*.ads.example"],
                }
            ]
        }
    )
    assert explain_text(cfg, f).endswith(
        "=> DENIED (12202) by rule 'Block': denied by rule 'Block'"
    )


def test_explain_bad_source_is_a_usage_error(tlsgate_home: Path) -> None:
    result = CliRunner().invoke(
        explain, ["--source", "x", "--url", "http://a/", "--home", str(tlsgate_home)]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError)


def test_rules_list(config_file: Path, tlsgate_home: Path) -> None:
    result = CliRunner().invoke(
        rules_list,
        ["--config", str(config_file), "--home", str(tlsgate_home)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    names = ["Block ads", "Old rule", "Partners", "Allow web access", "Default rule"]
    positions = [result.stdout.index(n) for n in names]
    assert positions == sorted(positions)


def test_sets_list_defaults(tlsgate_home: Path) -> None:
    result = CliRunner().invoke(sets_list, ["--home", str(tlsgate_home)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Internal" in result.stdout and "192.168.0.0/16" in result.stdout
    assert "External" in result.stdout


def test_policy_commands_are_exported() -> None:
    assert sorted(c.name or "" for c in POLICY_COMMANDS) == [
        "config",
        "explain",
        "rules",
        "sets",
        "users",
    ]
