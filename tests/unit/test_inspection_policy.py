"""The inspection decision without sockets: facts in, decision with reason out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tlsgate.config.model import InspectionSettings
from tlsgate.policy.inspection import (
    CLIENT_CERT_REASON,
    ConnectFacts,
    Deny,
    Inspect,
    LearnedEntry,
    ProbeResult,
    Tunnel,
    decide_after_probe,
    decide_connect,
    fix_commands,
)
from tlsgate.policy.match import domain_matches, normalise_domain, source_matches

FACTS = ConnectFacts(source_ip="10.1.2.3", host="api.bank.example", port=443)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def settings(**kw) -> InspectionSettings:
    return InspectionSettings(**kw)


@pytest.mark.parametrize(
    ("kw", "enabled", "expected", "reason_part"),
    [
        ({}, True, Inspect, "inspection is on"),
        ({}, False, Tunnel, "inspection is off"),
        ({"enabled": False}, True, Tunnel, "inspection is off"),
        ({"source_exceptions": ["10.1.2.3"]}, True, Tunnel, "source 10.1.2.3"),
        ({"source_exceptions": ["10.1.0.0/16"]}, True, Tunnel, "10.1.0.0/16"),
        ({"source_exceptions": ["10.2.0.0/16"]}, True, Inspect, "inspection is on"),
        ({"destination_exceptions": ["api.bank.example"]}, True, Tunnel, "destination"),
        ({"destination_exceptions": ["*.bank.example"]}, True, Tunnel, "*.bank.example"),
        ({"destination_exceptions": ["*.api.bank.example"]}, True, Inspect, "inspection is on"),
    ],
)
def test_decide_connect(kw, enabled, expected, reason_part):
    d = decide_connect(settings(**kw), FACTS, inspection_enabled=enabled)
    assert isinstance(d, expected)
    assert reason_part in d.reason


def test_learned_entry_tunnels_at_connect_time():
    learned = LearnedEntry(
        "api.bank.example", 443, CLIENT_CERT_REASON, NOW, NOW, 3, NOW + timedelta(hours=12)
    )
    d = decide_connect(settings(), FACTS, inspection_enabled=True, learned=learned)
    assert isinstance(d, Tunnel)
    assert "learned exception" in d.reason and "3 hits" in d.reason


def test_server_without_certificate_request_is_inspected():
    d = decide_after_probe(settings(), FACTS, ProbeResult(client_cert_requested=False))
    assert isinstance(d, Inspect)


def test_certificate_request_tunnels_and_learns_by_default():
    d = decide_after_probe(settings(), FACTS, ProbeResult(client_cert_requested=True))
    assert d == Tunnel(CLIENT_CERT_REASON, learn=True)


def test_certificate_request_denied_by_policy():
    d = decide_after_probe(
        settings(on_client_certificate="deny"), FACTS, ProbeResult(client_cert_requested=True)
    )
    assert isinstance(d, Deny) and d.status == 12229
    assert "on_client_certificate is deny" in d.reason


def test_bad_server_certificate_is_never_a_reason_to_tunnel():
    d = decide_after_probe(
        settings(), FACTS, ProbeResult(client_cert_requested=True, certificate_status=12225)
    )
    assert isinstance(d, Inspect)


def test_auto_tunnel_limited_to_destination_set():
    s = settings(auto_tunnel_destinations=["*.partner.example"])
    d = decide_after_probe(s, FACTS, ProbeResult(client_cert_requested=True))
    assert isinstance(d, Deny) and "auto_tunnel_destinations" in d.reason
    ok = ConnectFacts("10.1.2.3", "sync.partner.example", 443)
    assert isinstance(decide_after_probe(s, ok, ProbeResult(client_cert_requested=True)), Tunnel)


def test_destination_exception_matches_certificate_names():
    s = settings(destination_exceptions=["*.login.example"])
    facts = ConnectFacts("10.1.2.3", "203.0.113.9", 443)
    probe = ProbeResult(client_cert_requested=False, certificate_names=("sso.login.example",))
    d = decide_after_probe(s, facts, probe)
    assert isinstance(d, Tunnel) and "sso.login.example" in d.reason


def test_fix_commands_name_source_and_destination():
    cmds = fix_commands("10.1.2.3", "api.bank.example")
    assert "tlsgate inspection except source add 10.1.2.3" in cmds
    assert "tlsgate inspection except destination add api.bank.example" in cmds
    assert any(c.startswith("tlsgate apply") for c in cmds)


@pytest.mark.parametrize(
    ("host", "entries", "hit"),
    [
        ("a.example.com", ["*.example.com"], "*.example.com"),
        ("a.b.example.com", ["*.example.com"], "*.example.com"),
        ("example.com", ["*.example.com"], None),
        ("badexample.com", ["*.example.com"], None),
        ("Example.COM.", ["example.com"], "example.com"),
    ],
)
def test_domain_matching(host, entries, hit):
    assert domain_matches(host, entries) == hit


def test_source_matching_ipv4_mapped_and_v6():
    assert source_matches("::ffff:10.0.0.7", ["10.0.0.0/8"]) == "10.0.0.0/8"
    assert source_matches("::1", ["::1"]) == "::1"
    assert source_matches("192.0.2.1", ["10.0.0.0/8"]) is None


@pytest.mark.parametrize("bad", ["", "*", "a b", "http://x/", "*.", "a/b"])
def test_normalise_domain_rejects_garbage(bad):
    with pytest.raises(ValueError):
        normalise_domain(bad)
