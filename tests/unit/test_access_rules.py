"""Access rules without sockets: facts in, decision (rule, status, reason) out."""

from __future__ import annotations

from typing import Any

import pytest

from tlsgate.config.model import TlsgateConfig
from tlsgate.policy.access import (
    ALLOWED,
    AUTHENTICATION_REQUIRED,
    DENIED_BY_RULE,
    SSL_PORT_NOT_ALLOWED,
    AccessFacts,
    AccessPolicy,
    is_self,
)

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def get(src: str, url: str, *, user: str | None = None, method: str = "GET") -> AccessFacts:
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
    default = 443 if scheme == "https" else 80
    return AccessFacts(
        src,
        user,
        user is not None,
        method,
        scheme,
        host or authority,
        int(port or default),
        "/" + path,
        False,
    )


def connect(src: str, host: str, port: int = 443, *, user: str | None = None) -> AccessFacts:
    return AccessFacts(src, user, user is not None, "CONNECT", "https", host, port, "", True)


def rule(name: str, action: str = "allow", **kw: Any) -> dict[str, Any]:
    return {"name": name, "action": action, "sources": ["any"], "destinations": ["any"], **kw}


def policy(*rules: dict[str, Any], **sections: Any) -> AccessPolicy:
    users = [{"name": n, "password_hash": HASH} for n in ("alice", "bob", "carol")]
    return AccessPolicy.compile(
        TlsgateConfig.model_validate({"rules": list(rules), "users": users, **sections})
    )


DEFAULT = AccessPolicy.compile(TlsgateConfig())


# -- out of the box -------------------------------------------------------------------------


AWA, DR, INT, EXT = "Allow web access", "Default rule", "Internal", "External"


@pytest.mark.parametrize(
    ("facts", "rule_name", "status", "src_net", "dst_net"),
    [
        (get("127.0.0.1", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("::1", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("10.9.8.7", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("172.31.0.1", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("192.168.1.1", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("fd00::5", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (get("::ffff:10.0.0.1", "http://www.example.com/"), AWA, ALLOWED, INT, EXT),
        (connect("127.0.0.1", "www.example.com"), AWA, ALLOWED, INT, EXT),
        (get("203.0.113.9", "http://www.example.com/"), DR, DENIED_BY_RULE, EXT, EXT),
        (get("172.32.0.1", "http://www.example.com/"), DR, DENIED_BY_RULE, EXT, EXT),
        (connect("203.0.113.9", "www.example.com"), DR, DENIED_BY_RULE, EXT, EXT),
        (connect("127.0.0.1", "www.example.com", 8443), AWA, SSL_PORT_NOT_ALLOWED, INT, EXT),
        (connect("127.0.0.1", "www.example.com", 22), AWA, SSL_PORT_NOT_ALLOWED, INT, EXT),
        (get("127.0.0.1", "http://www.example.com:8080/"), AWA, ALLOWED, INT, EXT),
        (get("127.0.0.1", "http://10.1.1.1/"), AWA, ALLOWED, INT, INT),
        (get("127.0.0.1", "http://localhost/"), AWA, ALLOWED, INT, INT),
        (get("127.0.0.1", "http://8.8.8.8/"), AWA, ALLOWED, INT, EXT),
        (get("not-an-ip", "http://www.example.com/"), DR, DENIED_BY_RULE, EXT, EXT),
    ],
)
def test_default_policy(
    facts: AccessFacts, rule_name: str, status: int, src_net: str, dst_net: str
) -> None:
    d = DEFAULT.decide(facts)
    assert d.allowed is (status == ALLOWED)
    assert (d.rule, d.status, d.source_network, d.dest_network) == (
        rule_name,
        status,
        src_net,
        dst_net,
    )


def test_default_deny_explains_every_rule() -> None:
    d = DEFAULT.decide(get("203.0.113.9", "http://www.example.com/"))
    assert d.reason == "no rule allows this request; the Default rule denies it"
    assert d.trace == [
        "rule 1 'Allow web access': source 203.0.113.9 (External) is not in Internal"
    ]


def test_port_not_allowed_names_the_port() -> None:
    d = DEFAULT.decide(connect("10.0.0.1", "www.example.com", 8443))
    assert "port 8443" in d.reason and "443 only" in d.reason
    assert d.trace == ["rule 1 'Allow web access': CONNECT port 8443 is not in connect_ports (443)"]


def test_allowed_decision_skips_the_trace_unless_asked() -> None:
    p = policy(rule("Nope", sources=["10.0.0.0/8"]), rule("Yes"))
    f = get("192.168.0.1", "http://a.example/")
    assert p.decide(f).trace == []
    assert p.decide(f, explain=True).trace == [
        "rule 1 'Nope': source 192.168.0.1 (Internal) is not in 10.0.0.0/8"
    ]


def test_remembered_decisions_still_follow_the_path_and_the_other_facts() -> None:
    """Allowed decisions are remembered where the path cannot matter; a URL rule's host
    is decided per request, and any other fact changes the answer."""
    p = policy(
        rule("Docs only", destinations=["Docs"]), rule("Local", destinations=["a.test"]), **SETS
    )
    for _ in range(2):  # the second round is answered from memory where it can be
        assert p.decide(get("10.0.0.1", "https://docs.example/manual/a")).allowed
        assert not p.decide(get("10.0.0.1", "https://docs.example/other")).allowed
        assert p.decide(get("10.0.0.1", "http://a.test/x")).rule == "Local"
        assert p.decide(get("10.0.0.1", "http://a.test/y")).rule == "Local"
        denied = p.decide(get("10.0.0.1", "http://b.test/"))
        assert not denied.allowed and denied.trace  # denials are never remembered
    q = policy(rule("GET only", methods=["GET"], sources=["10.0.0.0/8"]))
    assert q.decide(get("10.0.0.1", "http://a.test/")).allowed
    assert not q.decide(get("10.0.0.1", "http://a.test/", method="POST")).allowed
    assert not q.decide(get("11.0.0.1", "http://a.test/")).allowed
    assert q.decide(get("10.0.0.1", "http://a.test/", method="GET")).allowed


# -- ordering, disabled rules, default deny ----------------------------------------------------


def test_first_match_wins() -> None:
    p = policy(rule("Block ads", "deny", destinations=["*.ads.example"]), rule("Everything"))
    assert p.decide(get("10.0.0.1", "http://x.ads.example/")).rule == "Block ads"
    assert not p.decide(get("10.0.0.1", "http://x.ads.example/")).allowed
    assert p.decide(get("10.0.0.1", "http://ads.example/")).rule == "Everything"

    reversed_ = policy(
        rule("Everything"), rule("Block ads", "deny", destinations=["*.ads.example"])
    )
    assert reversed_.decide(get("10.0.0.1", "http://x.ads.example/")).allowed


def test_disabled_rule_is_skipped_and_traced() -> None:
    p = policy(rule("Off", "deny", enabled=False), rule("On"))
    d = p.decide(get("10.0.0.1", "http://a.example/"), explain=True)
    assert (d.allowed, d.rule) == (True, "On")
    assert d.trace == ["rule 1 'Off': disabled"]


def test_no_rules_means_default_deny() -> None:
    d = policy().decide(get("127.0.0.1", "http://a.example/"))
    assert (d.allowed, d.rule, d.status) == (False, "Default rule", DENIED_BY_RULE)


def test_deny_rule_reason() -> None:
    d = policy(rule("No", "deny")).decide(get("127.0.0.1", "http://a.example/"))
    assert (d.rule, d.status, d.reason) == ("No", DENIED_BY_RULE, "denied by rule 'No'")


# -- sources, destinations, sets ---------------------------------------------------------------

SETS: dict[str, Any] = {
    "networks": [{"name": "Branch", "addresses": ["10.1.0.0/16"]}],
    "computer_sets": [{"name": "Servers", "addresses": ["192.168.5.10", "192.168.6.0/24"]}],
    "domain_sets": [{"name": "Partners", "domains": ["partner.example", "*.partner.example"]}],
    "url_sets": [
        {"name": "Docs", "urls": ["https://docs.example/manual/", "http://*.wiki.example/public"]}
    ],
}


@pytest.mark.parametrize(
    ("rule_kw", "facts", "matches"),
    [
        ({"sources": ["10.0.0.0/8"]}, get("10.200.0.1", "http://a.example/"), True),
        ({"sources": ["10.0.0.0/8"]}, get("11.0.0.1", "http://a.example/"), False),
        ({"sources": ["10.0.0.5"]}, get("10.0.0.5", "http://a.example/"), True),
        ({"sources": ["10.0.0.5"]}, get("10.0.0.6", "http://a.example/"), False),
        ({"sources": ["2001:db8::/32"]}, get("2001:db8::1", "http://a.example/"), True),
        ({"sources": ["Branch"]}, get("10.1.2.3", "http://a.example/"), True),
        ({"sources": ["branch"]}, get("10.2.2.3", "http://a.example/"), False),
        ({"sources": ["Servers"]}, get("192.168.6.7", "http://a.example/"), True),
        ({"sources": ["Servers"]}, get("192.168.5.11", "http://a.example/"), False),
        ({"sources": ["External"]}, get("8.8.8.8", "http://a.example/"), True),
        ({"sources": ["External"]}, get("10.1.0.1", "http://a.example/"), False),
        ({"destinations": ["Partners"]}, get("10.0.0.1", "http://partner.example/"), True),
        ({"destinations": ["Partners"]}, get("10.0.0.1", "http://WWW.Partner.Example./"), True),
        ({"destinations": ["Partners"]}, get("10.0.0.1", "http://a.b.partner.example/"), True),
        ({"destinations": ["Partners"]}, get("10.0.0.1", "http://notpartner.example/"), False),
        ({"destinations": ["*.shop.example"]}, get("10.0.0.1", "http://shop.example/"), False),
        ({"destinations": ["*.shop.example"]}, get("10.0.0.1", "http://x.shop.example/"), True),
        ({"destinations": ["shop.example"]}, get("10.0.0.1", "http://x.shop.example/"), False),
        ({"destinations": ["Docs"]}, get("10.0.0.1", "https://docs.example/manual/ch1"), True),
        ({"destinations": ["Docs"]}, get("10.0.0.1", "https://docs.example/other"), False),
        ({"destinations": ["Docs"]}, get("10.0.0.1", "http://docs.example/manual/"), False),
        ({"destinations": ["Docs"]}, get("10.0.0.1", "http://a.wiki.example/public/x"), True),
        ({"destinations": ["Docs"]}, get("10.0.0.1", "https://a.wiki.example/public/x"), False),
        # A CONNECT carries no path: the host (and scheme) of a URL-set entry decide.
        ({"destinations": ["Docs"]}, connect("10.0.0.1", "docs.example"), True),
        (
            {"destinations": ["https://x.example:8443/a"], "connect_ports": [8443]},
            connect("10.0.0.1", "x.example", 8443),
            True,
        ),
        (
            {"destinations": ["https://x.example:8443/a"], "connect_ports": [8443]},
            connect("10.0.0.1", "x.example", 443),
            False,
        ),
        ({"destinations": ["Internal"]}, get("10.0.0.1", "http://127.0.0.1:8080/"), True),
        ({"destinations": ["Internal"]}, get("10.0.0.1", "http://[::1]/"), True),
        ({"destinations": ["Internal"]}, get("10.0.0.1", "http://localhost/"), True),
        ({"destinations": ["Internal"]}, get("10.0.0.1", "http://intranet.corp/"), False),
        ({"destinations": ["External"]}, get("10.0.0.1", "http://intranet.corp/"), True),
        ({"destinations": ["External"]}, get("10.0.0.1", "http://10.9.9.9/"), False),
        ({"destinations": ["Servers"]}, get("10.0.0.1", "http://192.168.5.10/"), True),
        ({"destinations": ["Servers"]}, get("10.0.0.1", "http://servers.example/"), False),
        ({"destinations": ["203.0.113.0/24"]}, get("10.0.0.1", "http://203.0.113.7/"), True),
        ({"protocols": ["http"]}, get("10.0.0.1", "https://a.example/"), False),
        ({"protocols": ["https"]}, connect("10.0.0.1", "a.example"), True),
        ({"methods": ["GET", "HEAD"]}, get("10.0.0.1", "http://a.example/"), True),
        ({"methods": ["GET", "HEAD"]}, get("10.0.0.1", "http://a.example/", method="POST"), False),
        # Methods are literal: a rule limited to GET does not cover the CONNECT of a tunnel.
        ({"methods": ["GET"]}, connect("10.0.0.1", "a.example"), False),
        ({"methods": ["GET", "CONNECT"]}, connect("10.0.0.1", "a.example"), True),
        ({"connect_ports": [443, 8443]}, connect("10.0.0.1", "a.example", 8443), True),
    ],
)
def test_conditions(rule_kw: dict[str, Any], facts: AccessFacts, matches: bool) -> None:
    p = policy(rule("R", **rule_kw), **SETS)
    d = p.decide(facts, explain=True)
    assert (d.rule == "R" and d.allowed) is matches, d
    if not matches:
        assert d.trace and d.trace[0].startswith("rule 1 'R': ")


def test_overlapping_networks_log_the_narrowest() -> None:
    p = policy(rule("R"), **SETS)
    assert p.network_of("10.1.0.9") == "Branch"
    assert p.network_of("10.2.0.9") == "Internal"
    assert p.network_of("8.8.8.8") == "External"
    assert p.dest_network_of("10.1.0.9") == "Branch"
    assert p.dest_network_of("www.example.com") == "External"
    assert p.dest_network_of("LOCALHOST") == "Internal"
    # A rule naming Internal still covers an address in a network inside it.
    d = policy(rule("R", sources=["Internal"]), **SETS).decide(get("10.1.0.9", "http://a.example/"))
    assert d.allowed and d.source_network == "Branch"


def test_edited_internal_network() -> None:
    p = policy(
        rule("R", sources=["Internal"]),
        networks=[{"name": "Internal", "addresses": ["100.64.0.0/10"]}],
    )
    assert p.decide(get("100.64.1.1", "http://a.example/")).allowed
    assert not p.decide(get("127.0.0.1", "http://a.example/")).allowed


# -- CONNECT ports ----------------------------------------------------------------------------


def test_a_later_rule_may_allow_another_port() -> None:
    p = policy(
        rule("Web", sources=["Internal"]),
        rule(
            "Partner 8443",
            sources=["Internal"],
            destinations=["partner.example"],
            connect_ports=[8443],
        ),
    )
    assert p.decide(connect("10.0.0.1", "partner.example", 8443)).rule == "Partner 8443"
    d = p.decide(connect("10.0.0.1", "other.example", 8443))
    assert (d.allowed, d.status, d.rule) == (False, SSL_PORT_NOT_ALLOWED, "Web")


def test_a_later_deny_rule_wins_over_a_port_near_miss() -> None:
    p = policy(rule("Web"), rule("No", "deny"))
    d = p.decide(connect("10.0.0.1", "a.example", 8443))
    assert (d.status, d.rule) == (DENIED_BY_RULE, "No")


def test_deny_rules_apply_to_every_port() -> None:
    d = policy(rule("No", "deny")).decide(connect("10.0.0.1", "a.example", 8443))
    assert (d.status, d.rule) == (DENIED_BY_RULE, "No")


def test_ports_do_not_apply_to_plain_requests() -> None:
    assert DEFAULT.decide(get("10.0.0.1", "http://a.example:8080/")).allowed


# -- users ----------------------------------------------------------------------------------

USERS: dict[str, Any] = {"user_sets": [{"name": "Staff", "users": ["alice", "Bob"]}]}


@pytest.mark.parametrize(
    ("users", "user", "allowed", "status"),
    [
        ([], None, True, ALLOWED),
        ([], "carol", True, ALLOWED),
        (["alice"], None, False, AUTHENTICATION_REQUIRED),
        (["alice"], "alice", True, ALLOWED),
        (["alice"], "ALICE", True, ALLOWED),
        (["alice"], "carol", False, DENIED_BY_RULE),
        (["Staff"], "bob", True, ALLOWED),
        (["Staff"], "carol", False, DENIED_BY_RULE),
        (["authenticated"], "carol", True, ALLOWED),
        (["authenticated"], None, False, AUTHENTICATION_REQUIRED),
    ],
)
def test_users(users: list[str], user: str | None, allowed: bool, status: int) -> None:
    p = policy(rule("Staff only", users=users), **USERS)
    d = p.decide(get("10.0.0.1", "http://a.example/", user=user))
    assert (d.allowed, d.status) == (allowed, status)
    if status == AUTHENTICATION_REQUIRED:
        assert d.rule == "Staff only" and "must authenticate" in d.reason


def test_deny_rule_with_users_asks_anonymous_clients_to_authenticate() -> None:
    # Otherwise leaving out credentials would skip the deny rule.
    p = policy(rule("No bob", "deny", users=["bob"]), rule("Anyone"))
    assert p.decide(get("10.0.0.1", "http://a.example/")).status == AUTHENTICATION_REQUIRED
    assert p.decide(get("10.0.0.1", "http://a.example/", user="bob")).rule == "No bob"
    assert p.decide(get("10.0.0.1", "http://a.example/", user="alice")).rule == "Anyone"


def test_rules_not_matching_otherwise_do_not_ask_for_credentials() -> None:
    p = policy(rule("Staff", users=["alice"], sources=["10.5.0.0/16"]), rule("Anyone"))
    assert p.decide(get("10.0.0.1", "http://a.example/")).rule == "Anyone"


# -- the proxy's own listeners --------------------------------------------------------------

LISTENERS = [("127.0.0.1", 3128), ("0.0.0.0", 8080)]


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 3128, True),
        ("localhost", 3128, True),
        ("LOCALHOST.", 3128, True),
        ("0.0.0.0", 3128, True),
        ("127.0.0.2", 3128, False),
        ("127.0.0.1", 3129, False),
        ("www.example.com", 3128, False),
        ("127.0.0.1", 8080, True),
        ("127.8.9.10", 8080, True),
        ("::1", 8080, True),
        ("[::1]", 8080, True),
        ("localhost", 8080, True),
        ("gatehost", 8080, True),
        ("192.0.2.10", 8080, True),
        ("192.0.2.11", 8080, False),
        ("www.example.com", 8080, False),
    ],
)
def test_is_self(host: str, port: int, expected: bool) -> None:
    assert is_self(host, port, LISTENERS, local_names=["gatehost", "192.0.2.10"]) is expected


def test_is_self_ipv6_listener() -> None:
    assert is_self("::1", 9000, [("::1", 9000)])
    assert is_self("localhost", 9000, [("::1", 9000)])
    assert not is_self("127.0.0.1", 9000, [("::1", 9000)])
    assert is_self("10.0.0.1", 9000, [("::", 9000)], local_names=["10.0.0.1"])
