"""Matching of addresses and names against exception entries (IPs, CIDRs, domains)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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
