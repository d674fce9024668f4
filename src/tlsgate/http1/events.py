"""Events produced by the HTTP/1.1 readers: past-tense facts about a message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, final

from tlsgate.errors import ProtocolError
from tlsgate.http1.headers import Fields, Headers
from tlsgate.http1.target import Authority, Target


@final
class Framing:
    """How a message's body is delimited: four singletons, compared with ``is``.

    Not an ``enum.Enum``: on Python 3.11 reading an enum member (``Framing.NONE``) costs
    ~0.09 us against ~0.02 us for a class attribute, and a proxied request reads them
    about twenty times.
    """

    __slots__ = ("name",)

    NONE: ClassVar[Framing]
    LENGTH: ClassVar[Framing]
    CHUNKED: ClassVar[Framing]
    CLOSE: ClassVar[Framing]
    """Response body delimited by the server closing the connection."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Framing.{self.name}"


Framing.NONE = Framing("NONE")
Framing.LENGTH = Framing("LENGTH")
Framing.CHUNKED = Framing("CHUNKED")
Framing.CLOSE = Framing("CLOSE")


# The events made for every message write their ``__init__`` out: mypyc compiles it,
# where the one ``dataclass`` generates is interpreted (nine fields: 0.31 -> 0.05 us,
# BENCHMARKS.md "Native constructors").  The dataclass still gives equality and a repr.


@dataclass(slots=True, init=False)
class RequestHead:
    method: bytes
    raw_target: bytes
    version: tuple[int, int]
    headers: Headers
    fields: Fields
    keep_alive: bool
    framing: Framing
    length: int
    """Content-Length when ``framing`` is LENGTH, else 0."""
    expect_continue: bool
    connect: Authority | None
    """The authority of a CONNECT request."""
    target: Target | None
    """The absolute-form target, or None for origin-form (inside an inspected tunnel)."""
    upgrade: bytes | None
    """The protocol named in ``Upgrade`` when the client asked for one (``websocket``)."""

    def __init__(
        self,
        method: bytes,
        raw_target: bytes,
        version: tuple[int, int],
        headers: Headers,
        fields: Fields,
        keep_alive: bool,
        framing: Framing,
        length: int,
        expect_continue: bool,
        connect: Authority | None,
        target: Target | None,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        self.raw_target = raw_target
        self.version = version
        self.headers = headers
        self.fields = fields
        self.keep_alive = keep_alive
        self.framing = framing
        self.length = length
        self.expect_continue = expect_continue
        self.connect = connect
        self.target = target
        self.upgrade = upgrade


@dataclass(slots=True, init=False)
class ResponseHead:
    status: int
    reason: bytes
    version: tuple[int, int]
    headers: Headers
    fields: Fields
    keep_alive: bool
    framing: Framing
    length: int

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: tuple[int, int],
        headers: Headers,
        fields: Fields,
        keep_alive: bool,
        framing: Framing,
        length: int,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.fields = fields
        self.keep_alive = keep_alive
        self.framing = framing
        self.length = length


@dataclass(slots=True, init=False)
class BodyData:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True)
class MessageEnd:
    pass


@dataclass(slots=True)
class TunnelData:
    """Bytes that followed a CONNECT head or an upgrade: they belong to the tunnel."""

    data: bytes


@dataclass(slots=True)
class ParseFailed:
    """The input broke HTTP at this point; events before it are still valid."""

    error: ProtocolError


RequestEvent = RequestHead | BodyData | MessageEnd | TunnelData | ParseFailed
ResponseEvent = ResponseHead | BodyData | MessageEnd | TunnelData | ParseFailed

END = MessageEnd()
