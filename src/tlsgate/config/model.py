"""The configuration model: what an admin configures and the store keeps as revisions.

Parsed once (from ``tlsgate.toml``, the store, or defaults) into these frozen pydantic
models and passed on as typed objects.  Nothing deeper in the code looks up keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Model):
    """Caps that protect the proxy from oversized or slow input (see docs/configuration.md)."""

    max_header_bytes: int = Field(65536, ge=1024, le=1 << 20)
    """Request or response head (start line plus fields), bytes. Over it: 431 / 502."""
    max_header_count: int = Field(100, ge=8, le=10000)
    max_chunk_line_bytes: int = Field(4096, ge=64, le=65536)
    """A chunk-size line including extensions."""
    max_request_body_bytes: int = Field(0, ge=0)
    """0 means no limit; over it: 413 with status 12239."""


class Timeouts(_Model):
    """Seconds. Header deadlines are absolute, so a slow-drip client cannot hold a slot."""

    client_header: float = Field(30.0, gt=0)
    """From the first byte of a request (or connection start) to the end of its head."""
    client_idle: float = Field(75.0, gt=0)
    """A keep-alive client connection with no request in progress."""
    body_idle: float = Field(60.0, gt=0)
    """Between two reads of a request or response body."""
    connect: float = Field(10.0, gt=0)
    """TCP connect plus TLS handshake to an upstream server (504 / 10060 when exceeded)."""
    upstream_response: float = Field(120.0, gt=0)
    """From the end of the request to the upstream's response head."""
    upstream_idle_pooled: float = Field(30.0, gt=0)
    """An idle pooled upstream connection is closed after this."""
    shutdown_grace: float = Field(10.0, ge=0)
    """SIGTERM/SIGINT: how long in-flight requests may finish before they are cut."""


class UpstreamSettings(_Model):
    ca_file: Path | None = None
    """Extra CA certificates (PEM) trusted for upstream servers, beside the system store."""
    use_system_trust: bool = True


class InspectionSettings(_Model):
    enabled: bool = True
    """HTTPS inspection on; off makes every CONNECT a plain tunnel."""
    on_client_certificate: Literal["tunnel", "deny"] = "tunnel"
    learned_ttl_hours: float = Field(12.0, gt=0, le=24 * 365)
    auto_tunnel_destinations: list[str] = Field(default_factory=list)
    """Destinations that may be tunnelled automatically; empty means any."""
    source_exceptions: list[str] = Field(default_factory=list)
    destination_exceptions: list[str] = Field(default_factory=list)


class TlsgateConfig(_Model):
    """The whole configuration of a tlsgate installation (one store revision)."""

    inspection: InspectionSettings = InspectionSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
