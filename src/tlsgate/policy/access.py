"""The access decision: who may go where, first matching rule wins, with the reason.

Facts in (:class:`AccessFacts`), decision out (:class:`AccessDecision`); nothing here
touches a socket.  The configuration is compiled once (:meth:`AccessPolicy.compile`)
into per-rule bitmasks: each client address and each destination host is classified
against every rule once and cached, so a request costs a handful of dict lookups and
integer tests (see benchmarks in docs/policy.md).

Statuses (the status catalogue, :mod:`tlsgate.status`): 0 allowed; 12202 denied by a rule
(or the Default rule); 12204 a CONNECT port the matching rule does not allow; 12209 the
matching rule needs a user and the client sent no credentials (answer 407).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tlsgate.config.model import (
    ANY,
    AUTHENTICATED,
    DEFAULT_RULE,
    EXTERNAL,
    AccessRule,
    TlsgateConfig,
)
from tlsgate.errors import UsageError
from tlsgate.policy.match import (
    UrlPattern,
    is_network_literal,
    is_object_name,
    normalise_host,
    parse_url_pattern,
)
from tlsgate.policy.objects import (
    AddressRanges,
    DomainMatcher,
    IPAddress,
    Networks,
    is_localhost_name,
    parse_ip,
    url_candidates,
    url_matches,
)

ALLOWED = 0
DENIED_BY_RULE = 12202
SSL_PORT_NOT_ALLOWED = 12204
AUTHENTICATION_REQUIRED = 12209

ANONYMOUS = "anonymous"
SELF_REASON = "the proxy's own listeners are never reachable through the proxy"

# Client addresses and hosts seen are cached with their per-rule masks; past this many
# entries a cache starts afresh (bounded memory against scans of many hosts).
_CACHE_LIMIT = 50_000


@dataclass(slots=True, init=False)
class AccessFacts:
    """What the proxy knows about a request when it asks for a decision.

    For a CONNECT: ``method="CONNECT"``, ``scheme="https"``, ``is_connect=True``, the
    tunnel's host and port, ``path=""``.  For a plain or inspected request: its method,
    scheme, host, port and path (with query).

    Made once per request, so ``__init__`` is written out for mypyc to compile: a
    frozen dataclass's interpreted one cost 1.1 us (see ``LogRecord``).  Treat it as
    immutable.
    """

    source_ip: str
    user: str | None
    authenticated: bool
    method: str
    scheme: str
    host: str
    port: int
    path: str
    is_connect: bool

    def __init__(
        self,
        source_ip: str,
        user: str | None,
        authenticated: bool,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        is_connect: bool,
    ) -> None:
        self.source_ip = source_ip
        self.user = user
        self.authenticated = authenticated
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.is_connect = is_connect


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    rule: str
    """The rule that decided: its name, or ``Default rule``; logged with every request."""
    status: int
    """0 when allowed; 12202, 12204 or 12209 (→ 407) when not."""
    reason: str
    source_network: str
    dest_network: str
    trace: list[str] = field(default_factory=list)
    """Why each earlier rule did not match; filled for denials and for ``explain``."""


@dataclass(frozen=True, slots=True)
class _Rule:
    position: int
    """1-based position in the configured list."""
    name: str
    allow: bool
    enabled: bool
    bit: int
    protocols: frozenset[str]
    methods: frozenset[str] | None
    ports: frozenset[int]
    any_source: bool
    source_networks: tuple[str, ...]
    source_ranges: AddressRanges
    any_destination: bool
    dest_networks: tuple[str, ...]
    dest_ranges: AddressRanges
    dest_domains: DomainMatcher
    dest_urls: tuple[UrlPattern, ...]
    users: frozenset[str] | None
    """Lower-case user names (user sets expanded); None: anyone, even anonymous."""
    any_authenticated: bool
    config: AccessRule
    allow_reason: str
    deny_reason: str

    def user_matches(self, user: str | None) -> bool:
        if self.any_authenticated:
            return True
        return user is not None and self.users is not None and user.lower() in self.users


@dataclass(frozen=True, slots=True)
class _Host:
    network: str
    mask: int
    """Bit ``rule.bit`` set when the host alone satisfies the rule's destinations."""
    urls: dict[int, tuple[UrlPattern, ...]]
    """Rule bit → URL patterns whose host part matches (scheme, port, path still open)."""


class AccessPolicy:
    """A compiled access policy; :meth:`decide` is the per-request call."""

    def __init__(self, config: TlsgateConfig) -> None:
        self.networks = Networks.of(config.networks)
        self._net_ranges = dict(zip(self.networks.names, self.networks.ranges, strict=True))
        names = {n.lower(): n for n in self.networks.names}
        names[EXTERNAL.lower()] = EXTERNAL
        computers = {c.name.lower(): c.addresses for c in config.computer_sets}
        domains = {d.name.lower(): d.domains for d in config.domain_sets}
        urls = {u.name.lower(): u.urls for u in config.url_sets}
        users = {u.name.lower() for u in config.users if u.enabled}
        user_sets = {
            s.name.lower(): {m.lower() for m in s.users if m.lower() in users}
            for s in config.user_sets
        }
        rules = []
        for i, r in enumerate(config.rules):
            src_nets: list[str] = []
            src_addrs: list[str] = []
            for e in r.sources:
                key = e.strip().lower()
                if key in names:
                    src_nets.append(names[key])
                elif key in computers:
                    src_addrs.extend(computers[key])
                elif is_network_literal(e):
                    src_addrs.append(e)
            dst_nets: list[str] = []
            dst_addrs: list[str] = []
            dst_domains: list[str] = []
            dst_urls: list[UrlPattern] = []
            for e in r.destinations:
                key = e.strip().lower()
                if key in names:
                    dst_nets.append(names[key])
                elif key in computers:
                    dst_addrs.extend(computers[key])
                elif key in domains:
                    dst_domains.extend(domains[key])
                elif key in urls:
                    dst_urls.extend(parse_url_pattern(u) for u in urls[key])
                elif is_network_literal(e):
                    dst_addrs.append(e)
                elif "/" in e:
                    dst_urls.append(parse_url_pattern(e))
                elif not is_object_name(e):
                    dst_domains.append(e)
            allowed_users: set[str] = set()
            for u in r.users:
                key = u.strip().lower()
                if key in user_sets:
                    allowed_users |= user_sets[key]
                elif key in users:
                    allowed_users.add(key)
            rules.append(
                _Rule(
                    position=i + 1,
                    name=r.name,
                    allow=r.action == "allow",
                    enabled=r.enabled,
                    bit=1 << i,
                    protocols=frozenset(r.protocols),
                    methods=frozenset(r.methods) if r.methods else None,
                    ports=frozenset(r.connect_ports),
                    any_source=any(s.strip().lower() == ANY for s in r.sources),
                    source_networks=tuple(src_nets),
                    source_ranges=AddressRanges.of(src_addrs),
                    any_destination=any(d.strip().lower() == ANY for d in r.destinations),
                    dest_networks=tuple(dst_nets),
                    dest_ranges=AddressRanges.of(dst_addrs),
                    dest_domains=DomainMatcher.of(dst_domains),
                    dest_urls=tuple(dst_urls),
                    users=frozenset(allowed_users) if r.users else None,
                    any_authenticated=any(u.strip().lower() == AUTHENTICATED for u in r.users),
                    config=r,
                    allow_reason=f"allowed by rule {r.name!r}",
                    deny_reason=f"denied by rule {r.name!r}",
                )
            )
        self.rules: tuple[_Rule, ...] = tuple(rules)
        self._enabled = tuple(r for r in rules if r.enabled)
        self._sources: dict[str, tuple[str, int]] = {}
        self._hosts: dict[str, _Host] = {}
        self._allowed: dict[tuple[object, ...], AccessDecision] = {}

    @classmethod
    def compile(cls, config: TlsgateConfig) -> AccessPolicy:
        """Compile once per applied configuration; share the result across connections."""
        return cls(config)

    # -- classification, cached ---------------------------------------------------------

    def _in_network(self, name: str, addr: IPAddress) -> bool:
        if name == EXTERNAL:
            return not any(addr in r for r in self.networks.ranges)
        return addr in self._net_ranges[name]

    def _source(self, ip: str) -> tuple[str, int]:
        hit = self._sources.get(ip)
        if hit is not None:
            return hit
        addr = parse_ip(ip)
        mask = 0
        for r in self.rules:
            if r.any_source or (
                addr is not None
                and (
                    addr in r.source_ranges
                    or any(self._in_network(n, addr) for n in r.source_networks)
                )
            ):
                mask |= r.bit
        result = (self.networks.of_address(addr), mask)
        if len(self._sources) >= _CACHE_LIMIT:
            self._sources.clear()
        self._sources[ip] = result
        return result

    def _host(self, raw: str) -> _Host:
        hit = self._hosts.get(raw)
        if hit is not None:
            return hit
        host = normalise_host(raw)
        addr = parse_ip(host)
        network = self.networks.of_host(host)
        mask = 0
        urls: dict[int, tuple[UrlPattern, ...]] = {}
        for r in self.rules:
            if r.any_destination or r.dest_domains.matches(host):
                mask |= r.bit
            elif addr is not None:
                if addr in r.dest_ranges or any(self._in_network(n, addr) for n in r.dest_networks):
                    mask |= r.bit
            elif network in r.dest_networks:
                mask |= r.bit
            if r.dest_urls and not mask & r.bit:
                cands = url_candidates(r.dest_urls, host)
                if cands:
                    urls[r.bit] = cands
        result = _Host(network, mask, urls)
        if len(self._hosts) >= _CACHE_LIMIT:
            self._hosts.clear()
        self._hosts[raw] = result
        return result

    def network_of(self, ip: str) -> str:
        """The network of a client address, for the log's source network field."""
        return self._source(ip)[0]

    def dest_network_of(self, host: str) -> str:
        """The network of a destination (by address for IP literals; names are External
        except ``localhost``), for the log's destination network field."""
        return self._host(host).network

    # -- the decision ---------------------------------------------------------------------

    def decide(self, facts: AccessFacts, *, explain: bool = False) -> AccessDecision:
        """First matching enabled rule decides; the Default rule denies what none matches.

        ``trace`` (why each earlier rule did not match) is filled for denials and when
        ``explain`` is true; allowed requests on the hot path skip building it.
        """
        key = None
        if not explain and not self._host(facts.host).urls:
            # No URL pattern can match this host, so the path cannot change the
            # decision: an allowed one is remembered for the other facts (a keep-alive
            # client asks the same for every request; ~3 us each time).
            f = facts
            key = (
                f.source_ip,
                f.user,
                f.authenticated,
                f.method,
                f.scheme,
                f.host,
                f.port,
                f.is_connect,
            )
            hit = self._allowed.get(key)
            if hit is not None:
                return hit
        decision = self._evaluate(facts, None)
        if explain or not decision.allowed:
            return self._evaluate(facts, [])
        if key is not None:
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[key] = decision
        return decision

    def _evaluate(self, f: AccessFacts, trace: list[str] | None) -> AccessDecision:
        src_net, src_mask = self._source(f.source_ip)
        host = self._host(f.host)
        port_miss: _Rule | None = None
        rules = self.rules if trace is not None else self._enabled
        for r in rules:
            bit = r.bit
            if not r.enabled:
                if trace is not None:
                    trace.append(self._line(r, "disabled"))
                continue
            if not src_mask & bit:
                if trace is not None:
                    why = f"source {f.source_ip} ({src_net}) is not in {_list(r.config.sources)}"
                    trace.append(self._line(r, why))
                continue
            if f.scheme not in r.protocols:
                if trace is not None:
                    why = f"protocol {f.scheme} is not in {_list(r.config.protocols)}"
                    trace.append(self._line(r, why))
                continue
            if r.methods is not None and f.method not in r.methods:
                if trace is not None:
                    why = f"method {f.method} is not in {_list(r.config.methods)}"
                    trace.append(self._line(r, why))
                continue
            if not host.mask & bit:
                cands = host.urls.get(bit)
                if cands is None or not url_matches(
                    cands, f.scheme, f.port, f.path, is_connect=f.is_connect
                ):
                    if trace is not None:
                        why = (
                            f"destination {f.host} ({host.network}) is not in "
                            f"{_list(r.config.destinations)}"
                        )
                        trace.append(self._line(r, why))
                    continue
            if f.is_connect and r.allow and f.port not in r.ports:
                # Everything else may match: remember it, so if no later rule allows this
                # port the client learns the port is the problem (12204, as Squid's
                # SSL_ports), and a later rule for this port can still allow it.
                if port_miss is None and (
                    r.users is None or (f.authenticated and r.user_matches(f.user))
                ):
                    port_miss = r
                if trace is not None:
                    ports = ", ".join(str(p) for p in sorted(r.ports)) or "none"
                    why = f"CONNECT port {f.port} is not in connect_ports ({ports})"
                    trace.append(self._line(r, why))
                continue
            if r.users is not None:
                if not f.authenticated:
                    # The rule would apply if the client said who it is: ask (407), for
                    # deny rules too, so leaving out credentials cannot skip a deny rule.
                    return AccessDecision(
                        False,
                        r.name,
                        AUTHENTICATION_REQUIRED,
                        f"rule {r.name!r} applies to {_list(r.config.users)}; "
                        "the client must authenticate",
                        src_net,
                        host.network,
                        trace if trace is not None else [],
                    )
                if not r.user_matches(f.user):
                    if trace is not None:
                        why = f"user {f.user} is not in {_list(r.config.users)}"
                        trace.append(self._line(r, why))
                    continue
            if r.allow:
                return AccessDecision(
                    True,
                    r.name,
                    ALLOWED,
                    r.allow_reason,
                    src_net,
                    host.network,
                    trace if trace is not None else [],
                )
            return AccessDecision(
                False,
                r.name,
                DENIED_BY_RULE,
                r.deny_reason,
                src_net,
                host.network,
                trace if trace is not None else [],
            )
        if port_miss is not None:
            ports = ", ".join(str(p) for p in sorted(port_miss.ports)) or "none"
            return AccessDecision(
                False,
                port_miss.name,
                SSL_PORT_NOT_ALLOWED,
                f"CONNECT to port {f.port} is not allowed: rule {port_miss.name!r} allows "
                f"CONNECT to port(s) {ports} only",
                src_net,
                host.network,
                trace if trace is not None else [],
            )
        return AccessDecision(
            False,
            DEFAULT_RULE,
            DENIED_BY_RULE,
            "no rule allows this request; the Default rule denies it",
            src_net,
            host.network,
            trace if trace is not None else [],
        )

    @staticmethod
    def _line(rule: _Rule, why: str) -> str:
        return f"rule {rule.position} {rule.name!r}: {why}"


def _list(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "(none)"


# -- the proxy's own listeners -----------------------------------------------------------


def is_self(
    host: str,
    port: int,
    listeners: Iterable[tuple[str, int]],
    *,
    local_names: Iterable[str] = (),
) -> bool:
    """Would a request to ``host:port`` reach one of the proxy's own listeners?

    ``listeners`` are the bound ``(address, port)`` pairs of the proxy and admin ports.
    A listener on a wildcard address (``0.0.0.0``, ``::``, ``""``) is reached through any
    loopback address, ``localhost``, ``0.0.0.0`` and the names and addresses in
    ``local_names`` (the machine's host name and its interface addresses; see
    :func:`local_host_names`).  A listener on one address is reached through that address,
    through ``0.0.0.0`` (Linux connects it to the local host), through ``localhost`` when
    it is a loopback address, and through ``local_names``.

    Call it with the host of the request and, once resolved, with the address the proxy
    is about to connect to: a public name that resolves to 127.0.0.1 is caught then.
    The proxy answers such requests as denied (12202, reason :data:`SELF_REASON`).
    """
    h = normalise_host(host)
    addr = parse_ip(h)
    names: set[str] | None = None
    for lhost, lport in listeners:
        if lport != port:
            continue
        lh = normalise_host(lhost)
        laddr = parse_ip(lh) if lh else None
        wildcard = lh in ("", "*") or (laddr is not None and laddr.is_unspecified)
        loopback_listener = (laddr is not None and laddr.is_loopback) or is_localhost_name(lh)
        if addr is not None:
            if addr.is_unspecified or addr == laddr:
                return True
            if wildcard and addr.is_loopback:
                return True
        elif is_localhost_name(h) and (wildcard or loopback_listener):
            return True
        if names is None:
            names = {normalise_host(n) for n in local_names}
        if h in names:
            return True
    return False


def local_host_names() -> frozenset[str]:
    """This machine's host name (short and as given), for :func:`is_self`'s ``local_names``.

    Call once at start-up; it asks the kernel, not DNS.
    """
    name = socket.gethostname().lower().rstrip(".")
    return frozenset({name, name.split(".")[0]} - {""})


# -- explain -------------------------------------------------------------------------------


def facts_for_url(
    source_ip: str, url: str, *, method: str | None = None, user: str | None = None
) -> list[AccessFacts]:
    """The facts the proxy would check for a client fetching ``url``.

    ``http://`` → one request.  ``https://`` → the CONNECT that opens the tunnel, then the
    request inside it (checked when the tunnel is inspected); ``method="CONNECT"`` gives
    the CONNECT alone.  ``user`` is taken as authenticated (explain assumes the password
    is right).  Raises :class:`UsageError` for a URL that is not http(s) or has no host.
    """
    if parse_ip(source_ip) is None:
        raise UsageError(f"--source {source_ip!r} is not an IP address (e.g. 10.0.0.5)")
    text = url if "://" in url else f"http://{url}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--url {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--url {url!r}: give an http:// or https:// URL with a host "
            "(e.g. https://www.example.com/)"
        )
    host = parts.hostname
    port = port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    m = (method or "GET").upper()
    auth = user is not None
    request = AccessFacts(source_ip, user, auth, m, scheme, host, port, path, False)
    if scheme == "http" and m != "CONNECT":
        return [request]
    connect = AccessFacts(source_ip, user, auth, "CONNECT", "https", host, port, "", True)
    if m == "CONNECT":
        return [connect]
    return [connect, request]


def describe_facts(f: AccessFacts) -> str:
    target = (
        f"CONNECT {f.host}:{f.port}"
        if f.is_connect
        else f"{f.method} {f.scheme}://{_authority(f)}{f.path}"
    )
    return f"{target} from {f.source_ip}, user {f.user if f.authenticated else ANONYMOUS}"


def _authority(f: AccessFacts) -> str:
    host = f"[{f.host}]" if ":" in f.host else f.host
    default = 443 if f.scheme == "https" else 80
    return host if f.port == default else f"{host}:{f.port}"


def render_decision(f: AccessFacts, d: AccessDecision) -> str:
    """The text of ``tlsgate explain`` for one request: each earlier rule, then the result."""
    lines = [
        describe_facts(f),
        f"  source network {d.source_network}, destination network {d.dest_network}",
    ]
    lines += [f"  {t}" for t in d.trace]
    if d.allowed:
        lines.append(f"  => ALLOWED by rule {d.rule!r}")
    else:
        lines.append(f"  => DENIED ({d.status}) by rule {d.rule!r}: {d.reason}")
    return "\n".join(lines)


def explain(config: TlsgateConfig, facts: AccessFacts | Sequence[AccessFacts]) -> str:
    """Why ``config`` allows or denies ``facts``: the matching rule and why each earlier
    rule did not match (``tlsgate explain``)."""
    policy = AccessPolicy.compile(config)
    many = [facts] if isinstance(facts, AccessFacts) else list(facts)
    return "\n\n".join(render_decision(f, policy.decide(f, explain=True)) for f in many)
