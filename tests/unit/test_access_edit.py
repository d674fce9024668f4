"""Policy edits behind ``tlsgate rules|sets|users``: pure, validated, with clear refusals."""

from __future__ import annotations

import pytest

from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import ConfigError, UsageError
from tlsgate.policy import edit

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def rule(name: str, **kw: object) -> dict[str, object]:
    return {"name": name, "action": "allow", "sources": ["any"], "destinations": ["any"], **kw}


def names(cfg: TlsgateConfig) -> list[str]:
    return [r.name for r in cfg.rules]


BASE = TlsgateConfig()


def test_add_rule_goes_last_above_the_default_rule() -> None:
    cfg = edit.add_rule(BASE, rule("B"))
    assert names(cfg) == ["Allow web access", "B"]
    cfg = edit.add_rule(cfg, rule("A"), position=1)
    assert names(cfg) == ["A", "Allow web access", "B"]
    cfg = edit.add_rule(cfg, rule("C"), before="B")
    assert names(cfg) == ["A", "Allow web access", "C", "B"]
    assert names(BASE) == ["Allow web access"]  # the input is never changed


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"position": 3}, UsageError, "position 3 is out of range: 1 to 2"),
        ({"before": "Nope"}, UsageError, "no rule named 'Nope'"),
        ({"position": 1, "before": "Allow web access"}, UsageError, "not both"),
    ],
)
def test_add_rule_placement_errors(
    kw: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        edit.add_rule(BASE, rule("X"), **kw)  # type: ignore[arg-type]


def test_add_rule_is_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"rules\[1\]\.destinations\[0\]: unknown domain set 'Partners'"
    ):
        edit.add_rule(BASE, rule("X", destinations=["Partners"]))
    with pytest.raises(ConfigError, match="duplicate rule name"):
        edit.add_rule(BASE, rule("allow WEB access"))
    with pytest.raises(ConfigError, match=r"rules\[1\]\.action: 'maybe' is not one of"):
        edit.add_rule(BASE, rule("X", action="maybe"))


def test_move_enable_disable_remove() -> None:
    cfg = BASE
    for n in ("B", "C"):
        cfg = edit.add_rule(cfg, rule(n))
    assert names(edit.move_rule(cfg, "C", position=1)) == ["C", "Allow web access", "B"]
    assert names(edit.move_rule(cfg, "Allow web access", position=3)) == [
        "B",
        "C",
        "Allow web access",
    ]
    assert names(edit.move_rule(cfg, "c", before="B")) == ["Allow web access", "C", "B"]
    off = edit.set_rule_enabled(cfg, "B", False)
    assert [r.enabled for r in off.rules] == [True, False, True]
    assert edit.set_rule_enabled(off, "B", True) == cfg
    assert names(edit.remove_rule(cfg, "B")) == ["Allow web access", "C"]


@pytest.mark.parametrize(
    "change",
    [
        lambda c: edit.remove_rule(c, "Default rule"),
        lambda c: edit.move_rule(c, "default RULE", position=1),
        lambda c: edit.set_rule_enabled(c, "Default rule", False),
    ],
)
def test_the_default_rule_cannot_be_touched(change) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="built in and always last"):
        change(BASE)


def test_sets() -> None:
    cfg = edit.add_set(BASE, "domain", "Partners", ["*.partner.example"])
    cfg = edit.add_rule(cfg, rule("P", destinations=["Partners"]))
    cfg = edit.update_set(cfg, "partners", add=["partner.example"], remove=["*.PARTNER.example"])
    assert cfg.domain_sets[0].domains == ["partner.example"]
    with pytest.raises(UsageError, match="'Partners' is used by rule\\(s\\) 'P'"):
        edit.remove_set(cfg, "Partners")
    cfg = edit.remove_set(edit.remove_rule(cfg, "P"), "Partners")
    assert cfg.domain_sets == []
    with pytest.raises(UsageError, match="no network or set named 'Nope'"):
        edit.update_set(cfg, "Nope", add=["x.example"])
    with pytest.raises(ConfigError, match=r"computer_sets\[0\]\.addresses: 'x' is not an IP"):
        edit.add_set(cfg, "computer", "Servers", ["x"])
    with pytest.raises(UsageError, match="unknown set kind 'colour'"):
        edit.add_set(cfg, "colour", "X")


def test_internal_network_is_editable_not_removable() -> None:
    cfg = edit.update_set(BASE, "Internal", add=["100.64.0.0/10"], remove=["10.0.0.0/8"])
    assert "100.64.0.0/10" in cfg.networks[0].addresses
    assert "10.0.0.0/8" not in cfg.networks[0].addresses
    with pytest.raises(UsageError, match="Internal network cannot be removed"):
        edit.remove_set(BASE, "Internal")


def test_users() -> None:
    cfg = edit.add_user(BASE, "alice", HASH)
    with pytest.raises(UsageError, match="user 'ALICE' exists"):
        edit.add_user(cfg, "ALICE", HASH)
    cfg = edit.add_set(cfg, "user", "Staff", ["alice"])
    with pytest.raises(UsageError, match="user 'alice' is used by user set 'Staff'"):
        edit.remove_user(cfg, "alice")
    other = HASH.replace("aGFzaGhh", "b3RoZXJv")
    assert edit.set_password(cfg, "Alice", other).users[0].password_hash == other
    with pytest.raises(ConfigError, match="not an argon2 hash"):
        edit.set_password(cfg, "alice", "plain")
    cfg = edit.remove_user(edit.remove_set(cfg, "Staff"), "alice")
    assert cfg.users == []


def test_changed_sections() -> None:
    cfg = edit.add_rule(BASE, rule("B"))
    changes = edit.changed_sections(BASE, cfg)
    assert list(changes) == ["rules"]
    assert [r["name"] for r in changes["rules"]] == ["Allow web access", "B"]
    assert edit.changed_sections(cfg, cfg) == {}
