"""``tlsgate probe HOST[:PORT]``: what the server presents and what tlsgate would do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from tlsgate.commands.common import Home, console, home_option, store_option
from tlsgate.commands.effective import effective_config
from tlsgate.config.model import InspectionSettings
from tlsgate.errors import ProtocolError, UsageError
from tlsgate.http1.target import parse_authority
from tlsgate.policy import inspection
from tlsgate.proxy.probe import ProbeReport, run_probe
from tlsgate.status import lookup
from tlsgate.tls.upstream import UpstreamTLS


def decide(
    report: ProbeReport,
    settings: InspectionSettings,
    source: str,
    learned: inspection.LearnedEntry | None,
) -> inspection.Decision:
    facts = inspection.ConnectFacts(source, report.host, report.port)
    first = inspection.decide_connect(settings, facts, inspection_enabled=True, learned=learned)
    if not isinstance(first, inspection.Inspect) or report.error:
        return first
    names = tuple(n for c in report.chain[:1] for n in c.san)
    return inspection.decide_after_probe(
        settings,
        facts,
        inspection.ProbeResult(
            client_cert_requested=report.client_cert_requested,
            certificate_status=report.status,
            certificate_names=names,
            sni=report.sni,
        ),
    )


@click.command()
@click.argument("target", metavar="HOST[:PORT]")
@click.option("--sni", default=None, help="Server name to send (default: HOST unless an IP).")
@click.option(
    "--source",
    default="127.0.0.1",
    show_default=True,
    help="Client address to evaluate the policy for.",
)
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Extra CA certificates (PEM) to trust, as for serve.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Evaluate this tlsgate.toml instead of the applied configuration.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@home_option
@store_option
def probe(
    target: str,
    sni: str | None,
    source: str,
    upstream_ca: Path | None,
    config_file: Path | None,
    timeout: float,
    as_json: bool,
    home: Home,
    store_url: str | None,
) -> None:
    """Connect to a server directly and show its TLS setup and tlsgate's decision."""
    try:
        authority = parse_authority(target.encode("idna"), default_port=443)
    except (ProtocolError, UnicodeError):
        raise UsageError(
            f"{target!r} is not HOST[:PORT]", fix="e.g. tlsgate probe api.example.com:443"
        ) from None
    eff = effective_config(home, store_url, config_file)
    up = eff.config.upstream
    trust = UpstreamTLS(upstream_ca or up.ca_file, up.use_system_trust)
    server_name = sni or (None if authority.is_ip else authority.host)
    report = run_probe(authority, trust, server_name if server_name else authority.host, timeout)
    report.sni = server_name
    decision = decide(
        report, eff.config.inspection, source, eff.learned(authority.host, authority.port)
    )
    verdict = type(decision).__name__.lower()
    if as_json:
        out = dataclasses.asdict(report)
        out["decision"] = {"action": verdict, "reason": decision.reason}
        console.print_json(json.dumps(out))
        return
    _print(report, verdict, decision, eff.source)


def _print(report: ProbeReport, verdict: str, decision: inspection.Decision, source: str) -> None:
    # Server-supplied text (names, CA names, errors) goes in as plain Text segments: the
    # console never reads markup, so styles are given as (text, style) pairs.
    c = console
    c.print(
        Text.assemble(
            (f"{report.host}:{report.port}", "bold"),
            f"  address {report.address or '-'}  SNI {report.sni or '(none)'}",
        )
    )
    if report.error:
        st = lookup(report.status)
        c.print(
            Text.assemble(
                ("cannot connect:", "red"),
                f" {report.error} (status {report.status}: {st.remedy})",
            )
        )
    else:
        c.print(
            f"TLS {report.tls_version or '-'}  cipher {report.cipher or '-'}"
            f"  ALPN {report.alpn or '-'}"
        )
        if report.verified:
            c.print(
                Text.assemble(
                    "certificate: ", ("valid", "green"), " (trusted, name matches, in date)"
                )
            )
        else:
            st = lookup(report.status)
            c.print(
                Text.assemble(
                    "certificate: ",
                    (f"{report.status} {st.text}", "red"),
                    f"\n  {report.detail}\n  fix: {st.remedy}",
                )
            )
        table = Table(title="certificate chain as sent by the server", show_lines=True)
        for col in ("#", "subject", "issuer", "SAN", "EKU", "valid from", "valid until"):
            table.add_column(col, overflow="fold")
        for i, cert in enumerate(report.chain):
            table.add_row(
                str(i),
                cert.subject,
                cert.issuer,
                ", ".join(cert.san) or "-",
                ", ".join(cert.eku) or "-",
                cert.not_before,
                cert.not_after,
            )
        c.print(table)
        if report.client_cert_requested:
            cas = "; ".join(report.acceptable_cas) or "(the server names no CAs)"
            c.print(
                Text.assemble(
                    "client certificate: ", ("requested", "yellow"), f" — acceptable CAs: {cas}"
                )
            )
        else:
            c.print("client certificate: not requested")
    c.print(
        Text.assemble(
            "tlsgate would: ",
            (verdict, "bold"),
            f" — {decision.reason}  ",
            (f"(policy: {source})", "dim"),
        )
    )
