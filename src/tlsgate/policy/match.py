"""Matching of addresses and names against exception entries (IPs, CIDRs, domains)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_source(entry: str) -> IPNetwork:
    """An IP address or CIDR; raises ValueError with a readable message."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{entry!r} is not an IP address or CIDR (e.g. 10.0.0.5 or 10.0.0.0/24)"
        ) from None


def source_matches(ip: str, entries: Iterable[str]) -> str | None:
    """The first entry (IP/CIDR) that contains ``ip``, or None."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for entry in entries:
        try:
            if addr in parse_source(entry):
                return entry
        except ValueError:
            continue
    return None


def normalise_domain(entry: str) -> str:
    """``Example.COM.`` → ``example.com``; ``*.example.com`` stays a wildcard.

    Raises ValueError for entries that cannot match any host name.
    """
    e = entry.strip().lower().rstrip(".")
    body = e[2:] if e.startswith("*.") else e
    if _is_ip(body):
        return e
    if not body or any(c in body for c in "*/: \t") or len(body) > 253:
        raise ValueError(
            f"{entry!r} is not a host name or *.domain pattern (e.g. api.example.com or "
            "*.example.com)"
        )
    return e


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def domain_matches(host: str, entries: Iterable[str]) -> str | None:
    """The first entry matching ``host``: exact name, or ``*.domain`` for any subdomain.

    ``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
    ``example.com`` itself (list both to cover both), as TMG's domain name sets do.
    """
    h = host.lower().rstrip(".")
    for entry in entries:
        e = entry.strip().lower().rstrip(".")
        if e.startswith("*."):
            if h.endswith(e[1:]) and len(h) > len(e) - 1:
                return entry
        elif h == e:
            return entry
    return None


# -- access-policy entries (rules, domain and URL sets) ----------------------------------

OBJECT_NAME_HELP = "letters, digits, spaces, '-' and '_' (no dots: dotted words are host names)"


def is_object_name(entry: str) -> bool:
    """A bare word that names a network or set, as opposed to a literal address or host.

    Literals always carry a dot, colon, slash or star (``10.0.0.0/8``, ``::1``,
    ``*.example.com``, ``https://x.example/``), so a name can never be read as one.
    """
    e = entry.strip()
    return bool(e) and not any(c in e for c in ".:/*") and not _is_ip(e)


def is_network_literal(entry: str) -> bool:
    """An IP address or CIDR (``10.0.0.5``, ``10.0.0.0/8``, ``fc00::/7``)."""
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class UrlPattern:
    """One URL-set entry: ``[scheme://]host[:port][/path-prefix]``.

    ``scheme`` None matches http and https; ``host`` is an exact name, ``*.domain`` or an
    IP; ``path`` is a case-sensitive prefix of the request path (``/`` matches all).
    """

    scheme: str | None
    host: str
    port: int | None
    path: str

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if self.scheme is not None and scheme != self.scheme:
            return False
        if self.port is not None and port != self.port:
            return False
        if not host_matches(host, self.host):
            return False
        return path.startswith(self.path)


def host_matches(host: str, pattern: str) -> bool:
    """``host`` (lower case, no trailing dot) against an exact name or ``*.domain``."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def normalise_host(host: str) -> str:
    """How hosts are compared: lower case, no brackets around IPv6, no trailing dot."""
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return h.rstrip(".")


def parse_url_pattern(entry: str) -> UrlPattern:
    """Parse a URL-set entry; raises ValueError with an example of the expected form."""
    text = entry.strip()
    example = "(e.g. https://www.example.com/docs/, *.example.com/ or http://10.0.0.5:8080/)"
    scheme: str | None = None
    if "://" in text:
        raw_scheme, text = text.split("://", 1)
        raw_scheme = raw_scheme.lower()
        if raw_scheme not in ("http", "https", "*"):
            raise ValueError(f"{entry!r}: scheme must be http, https or * {example}")
        scheme = None if raw_scheme == "*" else raw_scheme
    authority, slash, path = text.partition("/")
    path = "/" + path if slash else "/"
    path = path.rstrip("*") or "/"
    port: int | None = None
    host = authority
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"{entry!r}: unclosed '[' in the host {example}")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: unexpected {rest!r} after the host {example}")
            port = _port(rest[1:], entry, example)
    elif authority.count(":") == 1:
        host, raw_port = authority.split(":")
        port = _port(raw_port, entry, example)
    if not host:
        raise ValueError(f"{entry!r}: no host {example}")
    try:
        host = normalise_domain(host)
    except ValueError:
        raise ValueError(f"{entry!r}: {host!r} is not a host name or *.domain {example}") from None
    return UrlPattern(scheme, normalise_host(host), port, path)


def _port(text: str, entry: str, example: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: port {text!r} is not a number from 1 to 65535 {example}")
    return int(text)
