"""The status catalogue: every status tlsgate can log or show, with its text and remedy.

Error pages, log records and ``tlsgate log`` take their words from here and nowhere else.
Codes follow TMG's Web Proxy log: HTTP codes (100-999), Winsock-style network codes
(10000-11999) and proxy codes (122xx).  tlsgate adds its own codes only where TMG has
none; they are in the 129xx range and marked ``tlsgate_only``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    http_status: int
    """The HTTP status sent to the client when this status ends a request."""
    text: str
    remedy: str
    tlsgate_only: bool = False

    @property
    def reason(self) -> str:
        return HTTP_REASONS.get(self.http_status, "Error")


HTTP_REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Proxy Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_CLIENT_CERT_TEXT = (
    "The Web site requires a client certificate, but a client certificate cannot be "
    "supplied when HTTPS inspection is applied to the request."
)

_ALL = [
    # -- HTTP-level problems with the client's request ------------------------------
    Status(
        400,
        400,
        "The request is malformed.",
        "Fix the client: the request line, Host header or framing is not valid HTTP/1.1.",
    ),
    Status(
        408,
        408,
        "The client did not send a complete request in time.",
        "Check the client's network; raise timeouts.client_header if clients are slow.",
    ),
    Status(
        413,
        413,
        "The request body is larger than the proxy allows.",
        "Raise limits.max_request_body_bytes or send a smaller body.",
    ),
    Status(
        429,
        429,
        "Too many failed proxy logins from this address.",
        "Wait for the time given in Retry-After, then log in with the right password.",
    ),
    Status(
        431,
        431,
        "The request header is larger than the proxy allows.",
        "Send fewer or smaller header fields, or raise limits.max_header_bytes.",
    ),
    Status(
        501,
        501,
        "The request uses a method or coding the proxy does not support.",
        "Use a standard HTTP method and Transfer-Encoding: chunked only.",
    ),
    Status(
        505,
        505,
        "The request uses an HTTP version the proxy does not support.",
        "Send HTTP/1.1 or HTTP/1.0 requests to the proxy.",
    ),
    Status(
        502,
        502,
        "The upstream server sent an invalid or incomplete response.",
        "The server is at fault; try again later or contact the site's owner.",
    ),
    Status(
        504,
        504,
        "The upstream server did not answer in time.",
        "Check that the server is up; raise timeouts.upstream_response for slow servers.",
    ),
    # -- Proxy codes, TMG-compatible -----------------------------------------------
    Status(
        12202,
        403,
        "The proxy denied the specified URL: an access rule denied it.",
        "Ask the proxy administrator to allow this destination (see 'tlsgate explain').",
    ),
    Status(
        12204,
        403,
        "The specified Secure Sockets Layer (SSL) port is not allowed.",
        "CONNECT is allowed to port 443 only; ask the administrator to allow this port.",
    ),
    Status(
        12209,
        407,
        "The proxy requires authentication.",
        "Configure the client with a proxy user name and password.",
    ),
    Status(
        12215,
        431,
        "The request header is too large.",
        "Send fewer or smaller header fields, or raise limits.max_header_bytes.",
    ),
    Status(
        12216,
        502,
        "The response header from the upstream server is too large.",
        "The server is at fault; raise limits.max_header_bytes if it is trusted.",
    ),
    Status(
        12224,
        502,
        "The upstream server's certificate is not yet valid.",
        "Check the server's clock and certificate, or this machine's clock.",
    ),
    Status(
        12225,
        502,
        "The upstream server's certificate has expired.",
        "The site must renew its certificate; the proxy will not inspect or pass it.",
    ),
    Status(
        12226,
        502,
        "The upstream server's certificate was issued by an untrusted authority.",
        "If the issuer is trusted internally, add its CA with 'tlsgate serve --upstream-ca FILE'.",
    ),
    Status(
        12227,
        502,
        "The upstream server's certificate does not match the requested host name.",
        "Use the host name the certificate was issued for, or fix the server's certificate.",
    ),
    Status(
        12228,
        502,
        "The upstream server's certificate is not valid for server authentication.",
        "The site must use a certificate whose Extended Key Usage includes serverAuth.",
    ),
    Status(
        12229,
        502,
        _CLIENT_CERT_TEXT,
        "Add an inspection exception for this source or destination, then 'tlsgate apply'.",
    ),
    Status(
        12230,
        502,
        "The upstream server's certificate has been revoked.",
        "Do not use this site until its owner replaces the certificate.",
    ),
    Status(
        12239,
        413,
        "The request body is too large.",
        "Raise limits.max_request_body_bytes or send a smaller body.",
    ),
    # -- Network errors (Winsock numbering, as TMG logs them) ---------------------------
    Status(
        10053,
        502,
        "The upstream server closed the connection before it answered.",
        "The server dropped the request; try again, and check the server's logs.",
    ),
    Status(
        10054,
        502,
        "The upstream server reset the connection.",
        "The server or a firewall reset the connection; check the server.",
    ),
    Status(
        10060,
        504,
        "The connection to the upstream server timed out.",
        "Check that the server is up and reachable from the proxy (firewall, routing).",
    ),
    Status(
        10061,
        502,
        "The upstream server refused the connection.",
        "Nothing listens on that host and port; check the URL and that the server runs.",
    ),
    Status(
        10065,
        502,
        "The upstream host is unreachable.",
        "Check the proxy's routing and firewall towards that network.",
    ),
    Status(
        11001,
        502,
        "The upstream host name could not be resolved.",
        "Check the spelling of the host name and the proxy's DNS settings.",
    ),
    # -- tlsgate's own ----------------------------------------------------------------
    Status(
        12901,
        502,
        "The TLS handshake with the upstream server failed.",
        "The server speaks no TLS version or cipher the proxy accepts (TLS 1.2+)",
        True,
    ),
    Status(
        12902,
        502,
        "The upstream server's certificate failed verification.",
        "Run 'tlsgate probe HOST:PORT' to see the certificate chain and the exact error.",
        True,
    ),
    Status(
        12903,
        400,
        "The client's TLS handshake with the proxy failed.",
        "Make the client trust tlsgate's CA ('tlsgate ca export') and use TLS 1.2+.",
        True,
    ),
]

CATALOGUE: dict[int, Status] = {s.code: s for s in _ALL}


def lookup(code: int) -> Status:
    """The catalogue entry for ``code``; plain HTTP codes not listed get a generic entry."""
    try:
        return CATALOGUE[code]
    except KeyError:
        reason = HTTP_REASONS.get(code, "Status")
        return Status(code, code if 100 <= code <= 999 else 502, reason, "")
