"""The configuration model: what an admin configures and the store keeps as revisions.

Parsed once (from ``tlsgate.toml``, the store, or defaults) into these frozen pydantic
models and passed on as typed objects.  Nothing deeper in the code looks up keys.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tlsgate.policy.match import (
    OBJECT_NAME_HELP,
    is_network_literal,
    is_object_name,
    normalise_domain,
    parse_source,
    parse_url_pattern,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Model):
    """Caps that protect the proxy from oversized or slow input (see docs/configuration.md)."""

    max_header_bytes: int = Field(65536, ge=1024, le=1 << 20)
    """Request or response head (start line plus fields), bytes. Over it: 431 / 502."""
    max_header_count: int = Field(100, ge=8, le=10000)
    max_chunk_line_bytes: int = Field(4096, ge=64, le=65536)
    """A chunk-size line including extensions."""
    max_request_body_bytes: int = Field(0, ge=0)
    """0 means no limit; over it: 413 with status 12239."""
    pooled_per_server: int = Field(256, ge=0, le=65536)
    """Idle upstream connections kept for reuse per server (scheme, host, port, SNI).
    Below the number of busy client connections to one site, requests pay new upstream
    handshakes (measured: a cap of 32 with 64 busy clients cost a third of keep-alive
    throughput)."""
    pooled_total: int = Field(4096, ge=0, le=1_000_000)
    """Idle upstream connections kept for reuse over all servers."""


class Timeouts(_Model):
    """Seconds. Header deadlines are absolute, so a slow-drip client cannot hold a slot."""

    client_header: float = Field(30.0, gt=0)
    """From the first byte of a request (or connection start) to the end of its head."""
    client_idle: float = Field(75.0, gt=0)
    """A keep-alive client connection with no request in progress."""
    body_idle: float = Field(60.0, gt=0)
    """Between two reads of a request or response body."""
    connect: float = Field(10.0, gt=0)
    """TCP connect plus TLS handshake to an upstream server (504 / 10060 when exceeded)."""
    upstream_response: float = Field(120.0, gt=0)
    """From the end of the request to the upstream's response head."""
    upstream_idle_pooled: float = Field(30.0, gt=0)
    """An idle pooled upstream connection is closed after this."""
    shutdown_grace: float = Field(10.0, ge=0)
    """SIGTERM/SIGINT: how long in-flight requests may finish before they are cut."""


class UpstreamSettings(_Model):
    ca_file: Path | None = None
    """Extra CA certificates (PEM) trusted for upstream servers, beside the system store."""
    use_system_trust: bool = True


class InspectionSettings(_Model):
    enabled: bool = True
    """HTTPS inspection on; off makes every CONNECT a plain tunnel."""
    on_client_certificate: Literal["tunnel", "deny"] = "tunnel"
    learned_ttl_hours: float = Field(12.0, gt=0, le=24 * 365)
    auto_tunnel_destinations: list[str] = Field(default_factory=list)
    """Destinations that may be tunnelled automatically; empty means any."""
    source_exceptions: list[str] = Field(default_factory=list)
    destination_exceptions: list[str] = Field(default_factory=list)
    detect_client_certificates: bool = True
    """Notice servers that ask for a client certificate (server first).  Off only for
    measurements: such servers then fail as they do behind other proxies."""


# -- access policy: network objects, users, rules (docs/policy.md) ----------------------

INTERNAL = "Internal"
EXTERNAL = "External"
ANY = "any"
AUTHENTICATED = "authenticated"
DEFAULT_RULE = "Default rule"
DEFAULT_INTERNAL_ADDRESSES = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
RESERVED_NAMES = frozenset({EXTERNAL.lower(), ANY, AUTHENTICATED, "anonymous"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-]{0,63}$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}$")
Protocol = Literal["http", "https"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "https")
_METHOD = re.compile(r"^[A-Z][A-Z0-9_\-]{0,31}$")


def _object_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid name: use {OBJECT_NAME_HELP}, up to 64")
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved; choose another name")
    return name


def _addresses(entries: list[str]) -> list[str]:
    for e in entries:
        parse_source(e)
    return [e.strip() for e in entries]


class Network(_Model):
    """A named set of address ranges, e.g. ``Internal`` or a branch office."""

    name: str
    addresses: list[str] = Field(min_length=1)
    """IP addresses and CIDRs (IPv4 and IPv6)."""
    description: str = ""

    _name = field_validator("name")(_object_name)
    _addresses = field_validator("addresses")(_addresses)


DEFAULT_INTERNAL = Network(
    name=INTERNAL,
    addresses=list(DEFAULT_INTERNAL_ADDRESSES),
    description="Loopback and private address ranges",
)


class ComputerSet(_Model):
    """Named client or server addresses (IPs and CIDRs)."""

    name: str
    addresses: list[str] = Field(default_factory=list)
    description: str = ""

    _name = field_validator("name")(_object_name)
    _addresses = field_validator("addresses")(_addresses)


class DomainSet(_Model):
    """Host names: ``www.example.com`` exactly, ``*.example.com`` for any subdomain."""

    name: str
    domains: list[str] = Field(default_factory=list)
    description: str = ""

    _name = field_validator("name")(_object_name)

    @field_validator("domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        return [normalise_domain(d) for d in domains]


class UrlSet(_Model):
    """URL prefixes: ``[scheme://]host[:port][/path]`` (``https://*.example.com/docs/``)."""

    name: str
    urls: list[str] = Field(default_factory=list)
    description: str = ""

    _name = field_validator("name")(_object_name)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for u in urls:
            parse_url_pattern(u)
        return [u.strip() for u in urls]


def _user_name(name: str) -> str:
    name = name.strip()
    if not _USER.match(name):
        raise ValueError(
            f"{name!r} is not a valid user name: letters, digits, '.', '_', '@', '-', up to 64"
        )
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved; choose another user name")
    return name


class UserSet(_Model):
    """Named group of proxy users."""

    name: str
    users: list[str] = Field(default_factory=list)
    description: str = ""

    _name = field_validator("name")(_object_name)


class User(_Model):
    """A proxy user; only the argon2 hash of the password is kept."""

    name: str
    password_hash: str = Field(repr=False)
    """``$argon2id$…`` as written by ``tlsgate users add``; never the password."""
    enabled: bool = True

    _name = field_validator("name")(_user_name)

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        if not value.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
            raise ValueError(
                "not an argon2 hash (set passwords with 'tlsgate users add' or "
                "'tlsgate users passwd')"
            )
        return value


class ProxyAuthSettings(_Model):
    """HTTP Basic authentication on the proxy connection (407 / Proxy-Authenticate)."""

    realm: str = Field("tlsgate", min_length=1, max_length=100)
    """Shown by browsers in the login prompt."""
    max_failures: int = Field(5, ge=1, le=1000)
    """Failed logins from one client address within ``failure_window`` before blocking."""
    failure_window: float = Field(60.0, gt=0)
    """Seconds over which failures are counted."""
    block_duration: float = Field(300.0, gt=0)
    """Seconds a client address is refused after too many failures (429)."""
    cache_ttl: float = Field(60.0, ge=0)
    """Seconds a verified user/password pair is remembered (argon2 is slow by design)."""


class AccessRule(_Model):
    """One ordered access rule; the first rule whose conditions all match decides."""

    name: str = Field(min_length=1, max_length=100)
    action: Literal["allow", "deny"]
    sources: list[str] = Field(min_length=1)
    """Network or computer-set names, IPs and CIDRs, or ``any``."""
    destinations: list[str] = Field(min_length=1)
    """``any``, network and set names (computer, domain, URL), IPs, CIDRs, host names,
    ``*.domain`` and URL prefixes."""
    protocols: list[Protocol] = Field(default_factory=lambda: list(PROTOCOLS), min_length=1)
    connect_ports: list[int] = Field(default_factory=lambda: [443])
    """Ports a CONNECT (HTTPS tunnel) may reach under an allow rule (deny rules: any)."""
    methods: list[str] = Field(default_factory=list)
    """Request methods (``GET``, ``CONNECT``…); empty means any."""
    users: list[str] = Field(default_factory=list)
    """User or user-set names, or ``authenticated``; empty means anyone, even anonymous."""
    enabled: bool = True
    description: str = ""

    @field_validator("name")
    @classmethod
    def _rule_name(cls, name: str) -> str:
        name = name.strip()
        if not name or any(ord(c) < 32 for c in name):
            raise ValueError("a rule name must be non-empty printable text")
        if name.lower() == DEFAULT_RULE.lower():
            raise ValueError(f"{DEFAULT_RULE!r} is the built-in last rule; choose another name")
        return name

    @field_validator("sources")
    @classmethod
    def _sources(cls, entries: list[str]) -> list[str]:
        for e in entries:
            if not (is_object_name(e) or is_network_literal(e)):
                raise ValueError(
                    f"{e!r} is not a network or computer-set name, an IP address or a CIDR"
                )
        return [e.strip() for e in entries]

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, entries: list[str]) -> list[str]:
        for e in entries:
            if is_object_name(e) or is_network_literal(e):
                continue
            if "/" in e:
                parse_url_pattern(e)
            else:
                normalise_domain(e)
        return [e.strip() for e in entries]

    @field_validator("connect_ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        for p in ports:
            if not 0 < p < 65536:
                raise ValueError(f"port {p} is not from 1 to 65535")
        return ports

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        out = [m.strip().upper() for m in methods]
        for m in out:
            if not _METHOD.match(m):
                raise ValueError(f"{m!r} is not an HTTP method (e.g. GET, POST, CONNECT)")
        return out


def default_rules() -> list[AccessRule]:
    """Out of the box, like Squid's default: Internal clients may browse, nobody else."""
    return [
        AccessRule(
            name="Allow web access",
            action="allow",
            sources=[INTERNAL],
            destinations=[ANY],
            protocols=["http", "https"],
            connect_ports=[443],
            description="Clients in Internal may use the web (HTTPS tunnels to port 443 only)",
        )
    ]


@dataclass(frozen=True, slots=True)
class ReferenceProblem:
    """A cross-reference that does not resolve, with the option path it sits at."""

    loc: tuple[str | int, ...]
    label: str
    """``rules[2] 'Partners'``: which object the problem is in."""
    text: str
    """``unknown domain set 'partnerz'``"""

    @property
    def message(self) -> str:
        return f"{self.label}: {self.text}"


def _kinds(
    networks: Sequence[Network],
    computer_sets: Sequence[ComputerSet],
    domain_sets: Sequence[DomainSet],
    url_sets: Sequence[UrlSet],
    user_sets: Sequence[UserSet],
    users: Sequence[User],
) -> tuple[dict[str, tuple[str, str]], list[ReferenceProblem]]:
    """lower-case name → (kind, name) for every named object, and duplicate-name problems."""
    known: dict[str, tuple[str, str]] = {EXTERNAL.lower(): ("network", EXTERNAL)}
    problems: list[ReferenceProblem] = []
    groups: list[tuple[str, str, Sequence[Network | ComputerSet | DomainSet | UrlSet | UserSet]]]
    groups = [
        ("networks", "network", networks),
        ("computer_sets", "computer set", computer_sets),
        ("domain_sets", "domain set", domain_sets),
        ("url_sets", "URL set", url_sets),
        ("user_sets", "user set", user_sets),
    ]
    for section, kind, objects in groups:
        for i, obj in enumerate(objects):
            key = obj.name.lower()
            if key in known:
                other_kind, other = known[key]
                problems.append(
                    ReferenceProblem(
                        (section, i, "name"),
                        f"{section}[{i}] {obj.name!r}",
                        f"the name is already used by the {other_kind} {other!r}; names are "
                        "unique across networks and sets (case does not matter)",
                    )
                )
                continue
            known[key] = (kind, obj.name)
    user_names: set[str] = set()
    for i, user in enumerate(users):
        key = user.name.lower()
        if key in user_names:
            problems.append(
                ReferenceProblem(
                    ("users", i, "name"), f"users[{i}] {user.name!r}", "duplicate user name"
                )
            )
        user_names.add(key)
        if key in known and known[key][0] == "user set":
            problems.append(
                ReferenceProblem(
                    ("users", i, "name"),
                    f"users[{i}] {user.name!r}",
                    f"the name is already used by the user set {known[key][1]!r}",
                )
            )
        known.setdefault(key, ("user", user.name))
    return known, problems


def _unknown(word: str, wanted: str, known: dict[str, tuple[str, str]], kinds: set[str]) -> str:
    candidates = [name for kind, name in known.values() if kind in kinds]
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {wanted} {word!r}{hint}"


def reference_problems(
    *,
    networks: Sequence[Network],
    computer_sets: Sequence[ComputerSet],
    domain_sets: Sequence[DomainSet],
    url_sets: Sequence[UrlSet],
    user_sets: Sequence[UserSet],
    users: Sequence[User],
    rules: Sequence[AccessRule],
) -> list[ReferenceProblem]:
    """Every name in rules and user sets that does not resolve, and every duplicate name."""
    known, problems = _kinds(networks, computer_sets, domain_sets, url_sets, user_sets, users)

    def check(
        loc: tuple[str | int, ...],
        label: str,
        entry: str,
        kinds: set[str],
        wanted: str,
        where: str,
    ) -> None:
        hit = known.get(entry.strip().lower())
        if hit is None:
            problems.append(ReferenceProblem(loc, label, _unknown(entry, wanted, known, kinds)))
        elif hit[0] not in kinds:
            problems.append(
                ReferenceProblem(loc, label, f"{hit[1]!r} is a {hit[0]}, which cannot be {where}")
            )

    for i, uset in enumerate(user_sets):
        for j, member in enumerate(uset.users):
            check(
                ("user_sets", i, "users", j),
                f"user_sets[{i}] {uset.name!r}",
                member,
                {"user"},
                "user",
                "a member of a user set",
            )
    rule_names: dict[str, int] = {}
    for i, rule in enumerate(rules):
        label = f"rules[{i}] {rule.name!r}"
        key = rule.name.lower()
        if key in rule_names:
            problems.append(
                ReferenceProblem(
                    ("rules", i, "name"),
                    label,
                    f"duplicate rule name (also rules[{rule_names[key]}]); rule names are unique",
                )
            )
        rule_names.setdefault(key, i)
        for j, src in enumerate(rule.sources):
            if is_object_name(src) and src.lower() != ANY:
                check(
                    ("rules", i, "sources", j),
                    label,
                    src,
                    {"network", "computer set"},
                    "network or computer set",
                    "a source (sources take networks, computer sets, IPs and CIDRs)",
                )
        for j, dst in enumerate(rule.destinations):
            if is_object_name(dst) and dst.lower() != ANY:
                check(
                    ("rules", i, "destinations", j),
                    label,
                    dst,
                    {"network", "computer set", "domain set", "URL set"},
                    "domain set",
                    "a destination (destinations take networks, computer, domain and URL sets)",
                )
        for j, user in enumerate(rule.users):
            if user.lower() != AUTHENTICATED:
                check(
                    ("rules", i, "users", j),
                    label,
                    user,
                    {"user", "user set"},
                    "user or user set",
                    "in users (users take user names, user sets and 'authenticated')",
                )
    return problems


class LogSettings(_Model):
    """The Web Proxy log (docs/log.md).  Read when a member starts."""

    enabled: bool = True
    """Record every request; off only for measurements."""
    retention_days: float = Field(30.0, gt=0)
    max_records: int = Field(10_000_000, ge=1000)
    buffer_records: int = Field(100_000, ge=100)
    """Records held in memory while the log store is slow or down; beyond: dropped and counted."""
    w3c_directory: Path | None = None
    """Also write W3C extended log files (one per UTC day) into this directory."""


class TlsgateConfig(_Model):
    """The whole configuration of a tlsgate installation (one store revision)."""

    inspection: InspectionSettings = InspectionSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    log: LogSettings = LogSettings()

    # -- access policy (docs/policy.md) ------------------------------------------------
    networks: list[Network] = Field(default_factory=lambda: [DEFAULT_INTERNAL])
    """Named address ranges. ``Internal`` always exists; ``External`` is everything else."""
    computer_sets: list[ComputerSet] = Field(default_factory=list)
    domain_sets: list[DomainSet] = Field(default_factory=list)
    url_sets: list[UrlSet] = Field(default_factory=list)
    user_sets: list[UserSet] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)
    """Proxy users (HTTP Basic on the proxy connection); passwords as argon2 hashes."""
    proxy_auth: ProxyAuthSettings = ProxyAuthSettings()
    rules: list[AccessRule] = Field(default_factory=default_rules)
    """Ordered access rules, first match wins; the implicit ``Default rule`` denies the rest."""

    @field_validator("networks")
    @classmethod
    def _internal_always_exists(cls, networks: list[Network]) -> list[Network]:
        # Internal is editable but not removable (as in TMG): a file that lists other
        # networks and leaves Internal out keeps the default Internal.
        if any(n.name.lower() == INTERNAL.lower() for n in networks):
            return networks
        return [DEFAULT_INTERNAL, *networks]

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> TlsgateConfig:
        # Cross-references need the whole config.  The file loader passes a list in the
        # validation context to collect problems with their option paths (for file:line
        # messages); every other caller gets one ValueError naming each problem.
        problems = reference_problems(
            networks=self.networks,
            computer_sets=self.computer_sets,
            domain_sets=self.domain_sets,
            url_sets=self.url_sets,
            user_sets=self.user_sets,
            users=self.users,
            rules=self.rules,
        )
        if not problems:
            return self
        ctx = info.context
        if isinstance(ctx, dict) and isinstance(ctx.get("reference_problems"), list):
            ctx["reference_problems"].extend(problems)
            return self
        raise ValueError("; ".join(p.message for p in problems))
