"""The Web Proxy log record: one value per request (or tunnelled connection).

The proxy's IO layer fills a :class:`LogRecord` as a request runs and hands it to the
:class:`~tlsgate.log.writer.LogWriter`.  The record is the contract: every sink and
output format renders these fields and nothing else.  Field names map to TMG's W3C
names as documented in ``docs/log.md`` (and in :data:`W3C_FIELDS` of
:mod:`tlsgate.log.formats`).

Construction is on the proxy's hot path, so the dataclass has plain defaults and no
validation; only ``request_id`` and ``time`` are filled by factories.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from time import time_ns
from typing import Any, Final

LOG_TYPE_FORWARD: Final = "Web Proxy (Forward)"

# Request ids: a random per-process prefix and a counter.  Unique within a process by
# construction and across processes with overwhelming probability; 16 hex digits, about
# 0.2 us to make (uuid4 costs ~2 us).
_PREFIX: Final = os.urandom(4).hex()


_ID_BLOCK: Final = 256
_ID_PACK: Final = struct.Struct(f">{_ID_BLOCK}I")


class _RequestIds:
    """Request ids made a block at a time: one ``pack`` and one ``hex`` for 256 ids,
    then a slice each (~2,200 instructions per id made one by one, ~500 so).  The
    counter is a native int (``next()`` on an ``itertools.count`` looked the builtin
    up for every id)."""

    __slots__ = ("counter", "ids")

    def __init__(self, start: int) -> None:
        self.ids: list[str] = []
        self.counter = start

    def take(self) -> str:
        if not self.ids:
            n = self.counter
            self.counter = n + _ID_BLOCK
            text = _ID_PACK.pack(*[(n + i) & 0xFFFFFFFF for i in range(_ID_BLOCK)]).hex()
            # Reversed, so that pop() hands them out in the counter's order.
            self.ids = [_PREFIX + text[i : i + 8] for i in range(len(text) - 8, -8, -8)]
        return self.ids.pop()


_IDS: Final = _RequestIds(int.from_bytes(os.urandom(2), "big") << 16)


def new_request_id() -> str:
    """A short, unique hex request id such as ``5f3a9c0e0001a2b4``."""
    return _IDS.take()


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def to_micros(t: datetime) -> int:
    """``t`` as microseconds since the Unix epoch; a naive ``t`` is taken as UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _MICROSECOND


def from_micros(us: int) -> datetime:
    """Microseconds since the Unix epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(slots=True, init=False)
class LogRecord:
    """Every field of TMG's Web Proxy log plus tlsgate's own (see docs/log.md).

    ``__init__`` is written out: mypyc compiles it, where the one ``dataclass`` makes
    is interpreted (2.2 -> 1.6 us per record made from Python with keywords, its id
    and time included; one is made per request).  Its parameters are the fields in
    declaration order with their defaults; a test keeps them so.
    """

    request_id: str
    time_us: int
    """Start of the request, microseconds since the Unix epoch; read it as :attr:`time`.
    Stored as a number: ``datetime.now`` cost ~2,800 instructions per request and the
    log daemon's frames carry microseconds anyway (BENCHMARKS.md)."""
    member: str
    """s-computername: the array member (host name) that handled the request."""
    log_type: str
    client_ip: str
    client_port: int
    user: str
    authenticated: bool
    agent: str
    referrer: str
    dest_host: str
    dest_ip: str
    dest_port: int
    time_taken_ms: int
    bytes_sent: int
    """sc-bytes: bytes sent to the client."""
    bytes_received: int
    """cs-bytes: bytes received from the client."""
    protocol: str
    """``http``, ``https-inspect``, ``SSL-tunnel`` or ``https``."""
    transport: str
    method: str
    url: str
    mime_type: str
    object_source: int
    """One of :data:`OBJECT_SOURCES`."""
    status: int
    """An HTTP status or a status catalogue code (:mod:`tlsgate.status`)."""
    cache_info: int
    rule: str
    filter_info: str
    source_network: str
    dest_network: str
    error_info: str
    action: str
    """``Allowed``, ``Denied`` or ``Failed``."""
    inspection: str
    """``inspect``, ``tunnel``, ``deny`` or ``none`` (plain HTTP)."""
    inspection_reason: str
    tls_version: str
    upstream_cert_subject: str

    def __init__(
        self,
        request_id: str | None = None,
        time: datetime | None = None,
        member: str = "",
        log_type: str = LOG_TYPE_FORWARD,
        client_ip: str = "",
        client_port: int = 0,
        user: str = "anonymous",
        authenticated: bool = False,
        agent: str = "",
        referrer: str = "",
        dest_host: str = "",
        dest_ip: str = "",
        dest_port: int = 0,
        time_taken_ms: int = 0,
        bytes_sent: int = 0,
        bytes_received: int = 0,
        protocol: str = "http",
        transport: str = "TCP",
        method: str = "",
        url: str = "",
        mime_type: str = "",
        object_source: int = 0,
        status: int = 0,
        cache_info: int = 0,
        rule: str = "",
        filter_info: str = "",
        source_network: str = "",
        dest_network: str = "",
        error_info: str = "",
        action: str = "Allowed",
        inspection: str = "none",
        inspection_reason: str = "",
        tls_version: str = "",
        upstream_cert_subject: str = "",
    ) -> None:
        self.request_id = new_request_id() if request_id is None else request_id
        self.time_us = time_ns() // 1000 if time is None else to_micros(time)
        self.member = member
        self.log_type = log_type
        self.client_ip = client_ip
        self.client_port = client_port
        self.user = user
        self.authenticated = authenticated
        self.agent = agent
        self.referrer = referrer
        self.dest_host = dest_host
        self.dest_ip = dest_ip
        self.dest_port = dest_port
        self.time_taken_ms = time_taken_ms
        self.bytes_sent = bytes_sent
        self.bytes_received = bytes_received
        self.protocol = protocol
        self.transport = transport
        self.method = method
        self.url = url
        self.mime_type = mime_type
        self.object_source = object_source
        self.status = status
        self.cache_info = cache_info
        self.rule = rule
        self.filter_info = filter_info
        self.source_network = source_network
        self.dest_network = dest_network
        self.error_info = error_info
        self.action = action
        self.inspection = inspection
        self.inspection_reason = inspection_reason
        self.tls_version = tls_version
        self.upstream_cert_subject = upstream_cert_subject

    def values_but_time(self) -> RecordValues:
        """Every field but ``time``, in :data:`FIELDS` order: what the log daemon's frames
        carry beside ``time_us``.  Written out, so it is compiled: ~0.1 us per record
        against ~1.3 for an ``attrgetter`` over 33 names (a test keeps the order)."""
        return (
            self.request_id,
            self.member,
            self.log_type,
            self.client_ip,
            self.client_port,
            self.user,
            self.authenticated,
            self.agent,
            self.referrer,
            self.dest_host,
            self.dest_ip,
            self.dest_port,
            self.time_taken_ms,
            self.bytes_sent,
            self.bytes_received,
            self.protocol,
            self.transport,
            self.method,
            self.url,
            self.mime_type,
            self.object_source,
            self.status,
            self.cache_info,
            self.rule,
            self.filter_info,
            self.source_network,
            self.dest_network,
            self.error_info,
            self.action,
            self.inspection,
            self.inspection_reason,
            self.tls_version,
            self.upstream_cert_subject,
        )

    @property
    def time(self) -> datetime:
        """Start of the request (UTC, timezone-aware)."""
        return from_micros(self.time_us)

    @time.setter
    def time(self, value: datetime) -> None:
        self.time_us = to_micros(value)


# Every field, in declaration order: sinks and formats iterate over this.  The start
# time is the field ``time`` here (a datetime), stored as ``time_us``.
FIELDS: Final[tuple[str, ...]] = tuple(
    "time" if f == "time_us" else f for f in LogRecord.__dataclass_fields__
)

RecordValues = tuple[Any, ...]
"""A record as the tuple of its fields (``FIELDS`` order)."""

values_of: Final[Callable[[LogRecord], RecordValues]] = attrgetter(*FIELDS)

WireBatch = tuple[list[RecordValues], list[int]]
"""A batch as the log daemon's frames carry it (``marshal`` cannot carry a datetime):
each record's values without the time, and the times in microseconds."""


def to_wire(records: Sequence[LogRecord]) -> WireBatch:
    """``records`` as a :data:`WireBatch`, in compiled code (the member does this for
    every record it logs).  The index keys are made in the daemon, off the proxy's CPU."""
    return [r.values_but_time() for r in records], [r.time_us for r in records]


ACTIONS: Final = ("Allowed", "Denied", "Failed")
PROTOCOLS: Final = ("http", "https-inspect", "SSL-tunnel", "https")
INSPECTIONS: Final = ("inspect", "tunnel", "deny", "none")

# Object source (s-object-source).  tlsgate does not cache: it logs 0 when no object
# was fetched (denied, failed, tunnelled) and 4 when the response came from the
# Internet; 8 is reserved for a chained upstream proxy.  The other values are TMG's,
# kept so imported logs and habits read the same.
OBJECT_SOURCES: Final[dict[int, tuple[str, str]]] = {
    0: ("None", "No source information is available."),
    1: ("Cache", "Source is the cache. Object returned from the cache."),
    2: ("Cache", "Source is the cache. Object was verified with the source."),
    3: ("Cache", "Source is the cache. Object could not be verified with the source."),
    4: ("Internet", "Source is the Internet. Object was not added to the cache."),
    5: ("Internet", "Source is the Internet. Object was added to the cache."),
    6: ("Internet", "Source is the Internet. Object was updated in the cache."),
    7: ("Not modified", "No request was sent: the object was not modified."),
    8: ("Upstream", "Source is an upstream (chained) proxy."),
}
OBJECT_SOURCE_NONE: Final = 0
OBJECT_SOURCE_INTERNET: Final = 4
OBJECT_SOURCE_UPSTREAM: Final = 8


def object_source_text(code: int) -> str:
    """``Internet (Source is the Internet. Object was not added to the cache.)``."""
    name, detail = OBJECT_SOURCES.get(code, ("Unknown", f"Object source {code}."))
    return f"{name} ({detail})"
