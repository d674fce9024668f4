"""Compiled network objects: address ranges, networks, domain and URL matchers.

Built once from the configuration (:class:`~tlsgate.config.model.TlsgateConfig`) so the
per-request checks are integer comparisons and set lookups.  Pure: no IO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tlsgate.config.model import EXTERNAL, INTERNAL, Network
from tlsgate.policy.match import UrlPattern, host_matches, normalise_domain, normalise_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An IP address (``[::1]`` and IPv4-mapped IPv6 are unwrapped), or None for a name."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if not t or not (t[0].isdigit() or ":" in t):
        return None  # cheap exit for host names
    try:
        addr = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class AddressRanges:
    """IP addresses and CIDRs as integer ranges: ``(version, first, last)``."""

    ranges: tuple[tuple[int, int, int], ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> AddressRanges:
        out = []
        for e in entries:
            net = ipaddress.ip_network(e.strip(), strict=False)
            out.append((net.version, int(net.network_address), int(net.broadcast_address)))
        return cls(tuple(out))

    def __contains__(self, addr: IPAddress) -> bool:
        v, n = addr.version, int(addr)
        return any(v == rv and lo <= n <= hi for rv, lo, hi in self.ranges)

    def smallest_containing(self, addr: IPAddress) -> int | None:
        """Size of the narrowest range holding ``addr`` (for longest-prefix choice)."""
        v, n = addr.version, int(addr)
        sizes = [hi - lo for rv, lo, hi in self.ranges if v == rv and lo <= n <= hi]
        return min(sizes) if sizes else None


# Host names that are Internal by name: RFC 6761 reserves localhost for loopback.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_localhost_name(host: str) -> bool:
    return host in LOCAL_NAMES or host.endswith(".localhost")


@dataclass(frozen=True, slots=True)
class Networks:
    """The configured networks; ``External`` is every address in none of them."""

    names: tuple[str, ...]
    ranges: tuple[AddressRanges, ...]

    @classmethod
    def of(cls, networks: Sequence[Network]) -> Networks:
        return cls(
            tuple(n.name for n in networks), tuple(AddressRanges.of(n.addresses) for n in networks)
        )

    def of_address(self, addr: IPAddress | None) -> str:
        """The network of an address: the one with the narrowest range holding it.

        Networks may overlap (a branch ``10.1.0.0/16`` inside Internal's ``10.0.0.0/8``);
        the log then names the more specific one.  Rules still match every network that
        contains the address.
        """
        if addr is None:
            return EXTERNAL
        best, best_size = EXTERNAL, -1
        for name, ranges in zip(self.names, self.ranges, strict=True):
            size = ranges.smallest_containing(addr)
            if size is not None and (best_size < 0 or size < best_size):
                best, best_size = name, size
        return best

    def of_host(self, host: str) -> str:
        """Destination network: by address for IP literals; names are External but localhost."""
        addr = parse_ip(host)
        if addr is not None:
            return self.of_address(addr)
        if is_localhost_name(normalise_host(host)) and INTERNAL in self.names:
            return INTERNAL
        return EXTERNAL

    def contains(self, name: str, addr: IPAddress) -> bool:
        """Is ``addr`` in network ``name`` (``External``: in no configured network)?"""
        if name == EXTERNAL:
            return not any(addr in r for r in self.ranges)
        for n, r in zip(self.names, self.ranges, strict=True):
            if n == name:
                return addr in r
        return False


@dataclass(frozen=True, slots=True)
class DomainMatcher:
    """Exact names (and IP strings) in a set; ``*.domain`` as suffixes."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    """``.example.com`` for ``*.example.com``: any subdomain, not the domain itself."""

    @classmethod
    def of(cls, entries: Iterable[str]) -> DomainMatcher:
        exact: set[str] = set()
        suffixes: list[str] = []
        for e in entries:
            d = normalise_domain(e)
            if d.startswith("*."):
                suffixes.append(d[1:])
            else:
                exact.add(normalise_host(d))
        return cls(frozenset(exact), tuple(suffixes))

    def matches(self, host: str) -> bool:
        """``host`` already normalised (:func:`normalise_host`)."""
        if host in self.exact:
            return True
        return any(host.endswith(s) for s in self.suffixes)

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)


def url_candidates(patterns: Sequence[UrlPattern], host: str) -> tuple[UrlPattern, ...]:
    """The URL patterns whose host part matches ``host`` (scheme, port, path still to check)."""
    return tuple(p for p in patterns if host_matches(host, p.host))


def url_matches(
    candidates: Sequence[UrlPattern], scheme: str, port: int, path: str, *, is_connect: bool
) -> bool:
    """Does any candidate match the rest of the request?

    A CONNECT carries no path (the tunnel is set up before any request is seen), so only
    scheme, host and port count then, as TMG does for HTTPS it does not inspect.
    """
    for p in candidates:
        if p.scheme is not None and p.scheme != scheme:
            continue
        if p.port is not None and p.port != port:
            continue
        if is_connect or path.startswith(p.path):
            return True
    return False
