"""``tlsgate ca``: export, import and show the inspection CA (logic in tlsgate.tls.ca)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from tlsgate.commands.common import Home, console, err_console, home_option
from tlsgate.errors import UsageError
from tlsgate.tls.ca import export_ca, import_ca, load_or_create_ca, name_text

INSTALL_HINT = "How to make clients trust it: docs/ca.md ('Trusting the CA')"


@click.group()
def ca() -> None:
    """The inspection CA: clients must trust it for HTTPS inspection to work."""


@ca.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pem", "der"]),
    default="pem",
    show_default=True,
    help="PEM (text, for most tools) or DER (binary, e.g. for Windows).",
)
@click.option(
    "--out", "out", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path), default=None
)
@home_option
def export_cmd(home: Home, fmt: Literal["pem", "der"], out: Path | None) -> None:
    """Write the CA certificate (to stdout, or to FILE with --out)."""
    authority = load_or_create_ca(home)
    data = export_ca(authority, fmt)
    if out is None:
        stream = click.get_binary_stream("stdout")
        if fmt == "der" and stream.isatty():
            raise UsageError(
                "refusing to write binary DER to a terminal",
                fix="use --out FILE, or --format pem",
            )
        stream.write(data)
        stream.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise UsageError(
            f"cannot write {out}: {exc.strerror}", fix="choose another --out"
        ) from None
    err_console.print(f"Wrote the CA certificate ({fmt.upper()}) to {out}", markup=False)


@ca.command("import")
@click.option(
    "--cert",
    "cert",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The CA certificate (PEM or DER); in PEM it may be followed by its issuers.",
)
@click.option(
    "--key",
    "key",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its private key (PEM or DER, unencrypted; ECDSA or RSA).",
)
@home_option
def import_cmd(home: Home, cert: Path, key: Path) -> None:
    """Use an existing CA (e.g. an enterprise sub-CA) instead of tlsgate's own."""
    had_ca = home.ca_cert.exists()
    authority = import_ca(home, cert, key)
    _say(f"Imported CA: {authority.subject_text}")
    _say(f"  SHA-256 fingerprint: {authority.fingerprint_sha256}")
    _say(f"  Chain sent to clients: {authority.chain_length} certificate(s)")
    if had_ca:
        _say(f"  Previous CA kept as {home.ca_cert}.bak and {home.ca_key}.bak")
    _say("Restart 'tlsgate serve' to use it; the leaf cache was emptied.")


@ca.command("show")
@home_option
def show_cmd(home: Home) -> None:
    """Show the CA: subject, fingerprint, validity, key type and files."""
    authority = load_or_create_ca(home)
    if authority.created:
        _say("Created a new CA (none existed in this home directory).")
    rows = [
        ("Subject", authority.subject_text),
        ("Issuer", name_text(authority.cert.issuer)),
        ("SHA-256 fingerprint", authority.fingerprint_sha256),
        ("Valid from", f"{authority.not_before:%Y-%m-%d %H:%M:%S} UTC"),
        ("Valid until", f"{authority.not_after:%Y-%m-%d %H:%M:%S} UTC"),
        ("Key type", authority.key_type),
        ("Chain sent to clients", f"{authority.chain_length} certificate(s)"),
        ("Certificate file", str(authority.cert_path)),
        ("Key file", str(authority.key_path)),
        ("Leaf key file", str(home.leaf_key)),
        ("Leaf cache", str(home.leaf_cache)),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        _say(f"{label + ':':<{width + 2}}{value}")
    _say(f"Export it with 'tlsgate ca export --out tlsgate-ca.pem'. {INSTALL_HINT}.")


def _say(text: str) -> None:
    # Subjects and paths may contain '[': print them as text, not rich markup.
    console.print(text, markup=False)
