"""The HTTPS inspection decision: inspect, tunnel or deny, and why.

Two steps, as TMG documents its flow: at CONNECT time (exceptions, learned servers,
inspection off) and after tlsgate has talked to the server first (did it ask for a
client certificate; is its certificate valid).  The IO layer gathers the facts and
carries out the decision; nothing here touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tlsgate.config.model import InspectionSettings
from tlsgate.policy.match import domain_matches, source_matches

CLIENT_CERT_REASON = "server requested a client certificate"


@dataclass(frozen=True, slots=True)
class Inspect:
    reason: str


@dataclass(frozen=True, slots=True)
class Tunnel:
    reason: str
    learn: bool = False
    """Remember this server as a learned exception."""


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    reason: str


Decision = Inspect | Tunnel | Deny


@dataclass(frozen=True, slots=True)
class ConnectFacts:
    source_ip: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LearnedEntry:
    host: str
    port: int
    reason: str
    first_seen: datetime
    last_seen: datetime
    hits: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What tlsgate saw when it handshook with the server first."""

    client_cert_requested: bool
    certificate_status: int = 0
    """0 when the server's certificate verified, else its catalogue status (122xx)."""
    certificate_names: tuple[str, ...] = ()
    sni: str | None = None


def decide_connect(
    settings: InspectionSettings,
    facts: ConnectFacts,
    *,
    inspection_enabled: bool,
    learned: LearnedEntry | None = None,
) -> Decision:
    """Decision at CONNECT time, before any byte goes to the server."""
    if not inspection_enabled or not settings.enabled:
        return Tunnel("HTTPS inspection is off")
    src = source_matches(facts.source_ip, settings.source_exceptions)
    if src is not None:
        return Tunnel(f"source {facts.source_ip} matches inspection exception {src}")
    dst = domain_matches(facts.host, settings.destination_exceptions)
    if dst is not None:
        return Tunnel(f"destination {facts.host} matches inspection exception {dst}")
    if learned is not None:
        return Tunnel(
            f"learned exception: {learned.reason} (first seen "
            f"{learned.first_seen:%Y-%m-%d %H:%M} UTC, {learned.hits} hits)"
        )
    return Inspect("HTTPS inspection is on")


def decide_after_probe(
    settings: InspectionSettings, facts: ConnectFacts, probe: ProbeResult
) -> Decision:
    """Decision once the server's first flight is known (server first)."""
    for name in (probe.sni, *probe.certificate_names):
        if name is None:
            continue
        dst = domain_matches(name, settings.destination_exceptions)
        if dst is not None:
            return Tunnel(f"destination {name} matches inspection exception {dst}")
    if not probe.client_cert_requested:
        return Inspect("HTTPS inspection is on")
    if probe.certificate_status:
        # A bad certificate is never a reason to stop inspecting: the client gets the
        # certificate error page instead of an uninspected tunnel.
        return Inspect("server requested a client certificate, but its certificate is not valid")
    if settings.on_client_certificate == "deny":
        return Deny(
            12229,
            f"{CLIENT_CERT_REASON}; inspection.on_client_certificate is deny",
        )
    if settings.auto_tunnel_destinations:
        names = [n for n in (facts.host, probe.sni) if n]
        if not any(domain_matches(n, settings.auto_tunnel_destinations) for n in names):
            return Deny(
                12229,
                f"{CLIENT_CERT_REASON}, and {facts.host} is not in "
                "inspection.auto_tunnel_destinations",
            )
    return Tunnel(CLIENT_CERT_REASON, learn=True)


def fix_commands(source_ip: str, host: str) -> list[str]:
    """The exact commands that make a denied client-certificate connection work."""
    return [
        f"tlsgate inspection except source add {source_ip}",
        f"tlsgate inspection except destination add {host}",
        "tlsgate apply -m 'client certificate exception'",
    ]


def explain_connect(
    settings: InspectionSettings,
    facts: ConnectFacts,
    *,
    inspection_enabled: bool = True,
    learned: LearnedEntry | None = None,
) -> list[str]:
    """What happens to an HTTPS connection, in words, before any probe (for explain)."""
    first = decide_connect(settings, facts, inspection_enabled=inspection_enabled, learned=learned)
    target = f"{facts.host}:{facts.port}"
    if isinstance(first, Tunnel):
        return [f"HTTPS inspection: tunnel {target} at CONNECT time — {first.reason}."]
    lines = [
        f"HTTPS inspection: inspect {target} — {first.reason}; tlsgate talks to the server "
        "first and then decides:",
        "  - the server's certificate is not valid → the client gets an error page "
        "(12224 to 12228), never a tunnel;",
    ]
    if settings.on_client_certificate == "deny":
        lines.append(
            "  - the server asks for a client certificate → deny with 12229 "
            "(inspection.on_client_certificate = deny);"
        )
    elif settings.auto_tunnel_destinations and not domain_matches(
        facts.host, settings.auto_tunnel_destinations
    ):
        lines.append(
            "  - the server asks for a client certificate → deny with 12229 "
            f"({facts.host} is not in inspection.auto_tunnel_destinations);"
        )
    else:
        lines.append(
            "  - the server asks for a client certificate → tunnel untouched and learn it for "
            f"{settings.learned_ttl_hours:g} h (inspection.on_client_certificate = tunnel);"
        )
    lines.append("  - otherwise → inspect with a certificate from tlsgate's CA.")
    return lines
