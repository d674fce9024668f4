"""TLS for the admin console (``tlsgate serve --admin-tls``): server certificates from
tlsgate's own CA, so browsers that trust the CA for inspection trust the console too.

The console answers to its listen address and to ``localhost`` (for an SSH tunnel); a
listener on every interface (``0.0.0.0`` / ``::``) answers to the host's names instead
of the wildcard.  Each name has its own leaf (the CA's leaves carry one name each),
chosen by the client's SNI; a client that sends no SNI (it connected to an IP address)
or an unknown name gets the first name's leaf.  Leaves are minted by a
:class:`~tlsgate.tls.ca.LeafMinter` of the console's own, replaced every day so that a
long-running member keeps presenting a leaf with validity left (a fresh minter reuses
the leaf cached on disk until it is close to expiry, then mints a new one).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable

from tlsgate.config.home import Home
from tlsgate.tls.ca import CertificateAuthority, LeafMinter, normalize_server_name

RENEW_EVERY = 24 * 3600.0
"""Seconds after which a new minter is made (see the module docstring)."""


def console_names(host: str) -> list[str]:
    """The names the console's certificate is for, the default (no SNI) first."""
    candidates: list[str]
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        candidates = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    else:
        candidates = [host, "localhost"]
    names: list[str] = []
    for candidate in candidates:
        try:
            name, _ = normalize_server_name(candidate)
        except ValueError:
            continue  # e.g. a host name that is not a valid DNS name: no leaf for it
        if name not in names:
            names.append(name)
    return names


class ConsoleCertificates:
    """The console's server :class:`ssl.SSLContext` (see the module docstring).

    Used from the member's event loop only (the SNI callback runs there), as the
    minter requires.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        home: Home,
        host: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ca = ca
        self.home = home
        self.names = console_names(host)
        if not self.names:
            self.names = ["localhost"]
        self.clock = clock
        self._minter = LeafMinter(ca, home)
        self._minted_at = clock()
        self.context = self._minter.context_for(self.names[0])
        """Given to the server; every handshake is switched to a current leaf's context."""
        self.context.sni_callback = self._choose

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context presenting the leaf for ``server_name`` (or the default name)."""
        if self.clock() - self._minted_at >= RENEW_EVERY:
            self._minter = LeafMinter(self.ca, self.home)
            self._minted_at = self.clock()
        name = (server_name or "").lower().rstrip(".")
        return self._minter.context_for(name if name in self.names else self.names[0])

    def _choose(self, conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        conn.context = self.context_for(server_name)
