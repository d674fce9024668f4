"""Edits of the access policy: rules, networks, sets and users, as pure functions.

Each takes a :class:`TlsgateConfig` and returns the new one, fully validated, or raises
:class:`~tlsgate.errors.ConfigError` / :class:`~tlsgate.errors.UsageError` naming what
is wrong and how to fix it.  The ``tlsgate rules|sets|users`` commands stage the result
(:func:`changed_sections` lists what to stage); nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from tlsgate.config.loader import check_config
from tlsgate.config.model import DEFAULT_RULE, INTERNAL, AccessRule, TlsgateConfig
from tlsgate.errors import ConfigError, UsageError

SetKind = Literal["network", "computer", "domain", "url", "user"]
SET_SECTIONS: dict[str, tuple[str, str]] = {
    # kind → (config section, field holding the entries)
    "network": ("networks", "addresses"),
    "computer": ("computer_sets", "addresses"),
    "domain": ("domain_sets", "domains"),
    "url": ("url_sets", "urls"),
    "user": ("user_sets", "users"),
}
POLICY_SECTIONS = (
    "networks",
    "computer_sets",
    "domain_sets",
    "url_sets",
    "user_sets",
    "users",
    "rules",
)


def rebuild(config: TlsgateConfig, **sections: Any) -> TlsgateConfig:
    """``config`` with whole sections replaced, validated; errors name the option path."""
    data = config.model_dump(mode="json")
    data.update(sections)
    new, problems = check_config(data, source="change")
    if new is None:
        text = "; ".join(p.removeprefix("change: ") for p in problems)
        raise ConfigError(text, fix="nothing was staged; correct the values and retry")
    return new


def changed_sections(old: TlsgateConfig, new: TlsgateConfig) -> dict[str, Any]:
    """Top-level sections that differ: section name → its new value (JSON-compatible)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return {k: v for k, v in after.items() if before.get(k) != v}


# -- rules -------------------------------------------------------------------------------


def _rule_index(config: TlsgateConfig, name: str) -> int:
    if name.strip().lower() == DEFAULT_RULE.lower():
        raise UsageError(
            f"{DEFAULT_RULE!r} is built in and always last: it cannot be removed, moved or "
            "disabled",
            fix="add a rule above it instead",
        )
    for i, r in enumerate(config.rules):
        if r.name.lower() == name.strip().lower():
            return i
    names = ", ".join(repr(r.name) for r in config.rules) or "none"
    raise UsageError(f"no rule named {name!r} (rules: {names})", fix="see 'tlsgate rules list'")


def _position(config: TlsgateConfig, position: int | None, before: str | None) -> int:
    """0-based insertion index from a 1-based ``position`` or a rule name ``before``."""
    if position is not None and before is not None:
        raise UsageError("give --position or --before, not both")
    if before is not None:
        return _rule_index(config, before)
    if position is None:
        return len(config.rules)
    if not 1 <= position <= len(config.rules) + 1:
        raise UsageError(
            f"position {position} is out of range: 1 to {len(config.rules) + 1} "
            f"({len(config.rules)} rules, then the Default rule)"
        )
    return position - 1


def _rules(config: TlsgateConfig) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in config.rules]


def add_rule(
    config: TlsgateConfig,
    rule: Mapping[str, Any] | AccessRule,
    *,
    position: int | None = None,
    before: str | None = None,
) -> TlsgateConfig:
    """Insert a rule (by default last, just above the Default rule)."""
    data = rule.model_dump(mode="json") if isinstance(rule, AccessRule) else dict(rule)
    rules = _rules(config)
    rules.insert(_position(config, position, before), data)
    return rebuild(config, rules=rules)


def remove_rule(config: TlsgateConfig, name: str) -> TlsgateConfig:
    rules = _rules(config)
    del rules[_rule_index(config, name)]
    return rebuild(config, rules=rules)


def move_rule(
    config: TlsgateConfig, name: str, *, position: int | None = None, before: str | None = None
) -> TlsgateConfig:
    """Move a rule to a 1-based position (among the others) or just above another rule."""
    i = _rule_index(config, name)
    rules = _rules(config)
    item = rules.pop(i)
    rest = config.model_copy(update={"rules": [r for j, r in enumerate(config.rules) if j != i]})
    if before is not None and before.strip().lower() == name.strip().lower():
        raise UsageError("a rule cannot be moved before itself")
    rules.insert(_position(rest, position, before), item)
    return rebuild(config, rules=rules)


def set_rule_enabled(config: TlsgateConfig, name: str, enabled: bool) -> TlsgateConfig:
    rules = _rules(config)
    rules[_rule_index(config, name)]["enabled"] = enabled
    return rebuild(config, rules=rules)


# -- networks and sets -------------------------------------------------------------------


def _section(kind: str) -> tuple[str, str]:
    try:
        return SET_SECTIONS[kind]
    except KeyError:
        raise UsageError(f"unknown set kind {kind!r}: one of {', '.join(SET_SECTIONS)}") from None


def find_set(config: TlsgateConfig, name: str) -> tuple[str, int]:
    """(kind, index) of the network or set called ``name`` (case does not matter)."""
    for kind, (section, _) in SET_SECTIONS.items():
        for i, obj in enumerate(getattr(config, section)):
            if obj.name.lower() == name.strip().lower():
                return kind, i
    raise UsageError(f"no network or set named {name!r}", fix="see 'tlsgate sets list'")


def add_set(
    config: TlsgateConfig,
    kind: str,
    name: str,
    entries: Sequence[str] = (),
    *,
    description: str = "",
) -> TlsgateConfig:
    section, field = _section(kind)
    items = [o.model_dump(mode="json") for o in getattr(config, section)]
    items.append({"name": name, field: list(entries), "description": description})
    return rebuild(config, **{section: items})


def _users_of(config: TlsgateConfig, name: str) -> list[str]:
    key = name.strip().lower()
    out = []
    for r in config.rules:
        if any(e.strip().lower() == key for e in (*r.sources, *r.destinations, *r.users)):
            out.append(r.name)
    return out


def remove_set(config: TlsgateConfig, name: str) -> TlsgateConfig:
    kind, i = find_set(config, name)
    section, _ = SET_SECTIONS[kind]
    if kind == "network" and getattr(config, section)[i].name.lower() == INTERNAL.lower():
        raise UsageError("the Internal network cannot be removed", fix="edit its addresses instead")
    used = _users_of(config, name)
    if used:
        raise UsageError(
            f"{name!r} is used by rule(s) {', '.join(repr(r) for r in used)}",
            fix="remove it from those rules first",
        )
    items = [o.model_dump(mode="json") for j, o in enumerate(getattr(config, section)) if j != i]
    return rebuild(config, **{section: items})


def update_set(
    config: TlsgateConfig,
    name: str,
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
) -> TlsgateConfig:
    """Add and remove entries of a network or set."""
    kind, i = find_set(config, name)
    section, field = SET_SECTIONS[kind]
    items = [o.model_dump(mode="json") for o in getattr(config, section)]
    entries: list[str] = list(items[i][field])
    for e in remove:
        match = [x for x in entries if x.lower() == e.strip().lower()]
        if not match:
            raise UsageError(f"{e!r} is not in {name!r} (entries: {', '.join(entries) or 'none'})")
        entries.remove(match[0])
    for e in add:
        if e.strip().lower() not in (x.lower() for x in entries):
            entries.append(e.strip())
    items[i][field] = entries
    return rebuild(config, **{section: items})


# -- users -------------------------------------------------------------------------------


def _user_index(config: TlsgateConfig, name: str) -> int | None:
    for i, u in enumerate(config.users):
        if u.name.lower() == name.strip().lower():
            return i
    return None


def add_user(config: TlsgateConfig, name: str, password_hash: str) -> TlsgateConfig:
    if _user_index(config, name) is not None:
        raise UsageError(f"user {name!r} exists", fix="use 'tlsgate users passwd' to change it")
    users = [u.model_dump(mode="json") for u in config.users]
    users.append({"name": name, "password_hash": password_hash})
    return rebuild(config, users=users)


def remove_user(config: TlsgateConfig, name: str) -> TlsgateConfig:
    i = _user_index(config, name)
    if i is None:
        raise UsageError(f"no user named {name!r}", fix="see 'tlsgate users list'")
    used = [r.name for r in config.rules if any(u.lower() == name.lower() for u in r.users)]
    sets = [s.name for s in config.user_sets if any(u.lower() == name.lower() for u in s.users)]
    if used or sets:
        where = ", ".join([*(f"rule {r!r}" for r in used), *(f"user set {s!r}" for s in sets)])
        raise UsageError(f"user {name!r} is used by {where}", fix="remove it there first")
    users = [u.model_dump(mode="json") for j, u in enumerate(config.users) if j != i]
    return rebuild(config, users=users)


def set_password(config: TlsgateConfig, name: str, password_hash: str) -> TlsgateConfig:
    i = _user_index(config, name)
    if i is None:
        raise UsageError(f"no user named {name!r}", fix="add it with 'tlsgate users add'")
    users = [u.model_dump(mode="json") for u in config.users]
    users[i]["password_hash"] = password_hash
    return rebuild(config, users=users)
