"""The one error tree of tlsgate.

Lower layers (socket, ssl, sqlite, psycopg, pydantic) raise their own errors; each is
mapped into this tree once, at the seam where it happens.  The edges map this tree to
a user-facing form: the CLI prints ``message`` (one line) and exits with ``exit_code``,
the proxy renders an error page from the status catalogue, the log records the status.
"""

from __future__ import annotations


class TlsgateError(Exception):
    """Base of every error tlsgate reports to a user.

    ``message`` says what is wrong; ``fix`` says what to do about it.  Both are one line.
    """

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class UsageError(TlsgateError):
    """A wrong command-line argument or option value."""

    exit_code = 2


class ConfigError(TlsgateError):
    """A configuration file or value that does not validate."""

    exit_code = 2


class StoreError(TlsgateError):
    """The configuration store cannot be reached or refused an operation."""

    exit_code = 3


class ConflictError(StoreError):
    """Another admin applied or changed the configuration first."""

    exit_code = 4


class CertificateAuthorityError(TlsgateError):
    """The inspection CA is missing, unreadable or unsuitable."""

    exit_code = 2


class UpstreamError(TlsgateError):
    """The proxy could not get an answer from the upstream server.

    ``status`` is a code from the status catalogue (:mod:`tlsgate.status`): an HTTP
    code, a TMG-compatible 122xx code or a Winsock-style network code.
    """

    def __init__(self, status: int, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status


class ProtocolError(TlsgateError):
    """A peer broke HTTP/1.1 (or TLS framing).  ``status`` is the catalogue code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
