"""Request targets: absolute-form for proxied requests, authority-form for CONNECT."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol

import httptools

from tlsgate.errors import ProtocolError

_LABEL = rb"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,62})"
_HOSTNAME = re.compile(rb"^(?=.{1,253}$)" + _LABEL + rb"(?:\." + _LABEL + rb")*\.?$")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True, init=False)
class Authority:
    host: str
    """Lower-case name or IP literal without brackets."""
    port: int

    def __init__(self, host: str, port: int) -> None:
        # Written out so mypyc compiles it (a dataclass's own is interpreted; made per
        # plain-HTTP request); frozen, so through object.__setattr__.
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)

    def host_for_url(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.host_for_url()}:{self.port}"


@dataclass(frozen=True, slots=True, init=False)
class Target:
    """An absolute-form request target split for forwarding."""

    scheme: str
    authority: Authority
    path: bytes
    """origin-form: path plus ``?query``; ``/`` or ``*`` at least."""

    def __init__(self, scheme: str, authority: Authority, path: bytes) -> None:
        object.__setattr__(self, "scheme", scheme)  # as Authority's
        object.__setattr__(self, "authority", authority)
        object.__setattr__(self, "path", path)

    @property
    def url(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.authority.port
        port = "" if default else f":{self.authority.port}"
        return f"{self.scheme}://{self.authority.host_for_url()}{port}{self.path.decode('latin-1')}"

    def host_header(self) -> bytes:
        default = DEFAULT_PORTS[self.scheme] == self.authority.port
        host = self.authority.host_for_url()
        return (host if default else f"{host}:{self.authority.port}").encode("ascii")


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def valid_host(host: bytes) -> str:
    """Validate a host name or IP literal; returns it lower-cased, brackets removed.

    Cached (errors are not): a plain-HTTP client names the same few hosts in every
    request, and the checks (a regular expression, ``ipaddress``) cost ~3 us each time.
    """
    if host.startswith(b"[") and host.endswith(b"]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1].decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(400, "invalid IPv6 literal in the request target") from None
    if _HOSTNAME.match(host) is None:
        raise ProtocolError(400, "invalid host name in the request target")
    text = host.decode("ascii").lower().rstrip(".")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return text


def _port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5:
        raise ProtocolError(400, "invalid port in the request target")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ProtocolError(400, "port out of range in the request target")
    return port


def parse_authority(raw: bytes, *, default_port: int | None = None) -> Authority:
    """``host:port`` (RFC 9112 §3.2.3); brackets for IPv6; the port is required unless defaulted."""
    if b"@" in raw:
        raise ProtocolError(400, "userinfo is not allowed in a request target")
    if raw.startswith(b"["):
        end = raw.find(b"]")
        if end < 0:
            raise ProtocolError(400, "unterminated IPv6 literal in the request target")
        host_part, rest = raw[: end + 1], raw[end + 1 :]
        if rest and not rest.startswith(b":"):
            raise ProtocolError(400, "invalid authority in the request target")
        port_part = rest[1:] if rest else None
    else:
        host_part, sep, port_part_b = raw.rpartition(b":")
        if not sep:
            host_part, port_part = raw, None
        else:
            port_part = port_part_b
    if port_part is None:
        if default_port is None:
            raise ProtocolError(400, "CONNECT target needs a port (host:port)")
        port = default_port
    else:
        port = _port(port_part)
    return Authority(valid_host(host_part), port)


class _Url(Protocol):
    """What ``httptools.parse_url`` returns, as it is: its stubs say ``bytes`` where
    an absent part is None (compiled with mypyc, the stubs' types would be enforced)."""

    @property
    def schema(self) -> bytes | None: ...
    @property
    def host(self) -> bytes | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def path(self) -> bytes | None: ...
    @property
    def query(self) -> bytes | None: ...
    @property
    def fragment(self) -> bytes | None: ...
    @property
    def userinfo(self) -> bytes | None: ...


def parse_absolute(raw: bytes) -> Target:
    """Parse ``http://host[:port]/path?query`` as sent to a forward proxy."""
    try:
        url: _Url = httptools.parse_url(raw)
    except httptools.HttpParserInvalidURLError:
        raise ProtocolError(400, "the request target is not a valid URL") from None
    scheme = (url.schema or b"").decode("ascii", "replace").lower()
    if scheme not in DEFAULT_PORTS:
        raise ProtocolError(400, f"unsupported URL scheme {scheme!r}: use http:// or https://")
    if url.userinfo:
        raise ProtocolError(400, "userinfo (user:password@) is not allowed in a URL")
    if url.fragment is not None:
        raise ProtocolError(400, "a URL sent in a request must not contain a #fragment")
    raw_host = url.host
    if not raw_host:
        raise ProtocolError(400, "the URL has no host")
    host = valid_host(b"[" + raw_host + b"]" if b":" in raw_host else raw_host)
    port = url.port if url.port is not None else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise ProtocolError(400, "port out of range in the request target")
    path = url.path or b"/"
    query = url.query
    if query is not None:
        path += b"?" + query
    return Target(scheme, Authority(host, port), path)
