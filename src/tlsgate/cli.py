"""The command line: ``tlsgate COMMAND``.  Thin: every command calls a typed function.

Errors from the :mod:`tlsgate.errors` tree become one line on stderr and their exit code;
wrong usage exits 2.  No traceback reaches a user.
"""

from __future__ import annotations

import sys

import click

from tlsgate import __version__, build
from tlsgate.admin.commands import admin
from tlsgate.commands.ca import ca
from tlsgate.commands.inspection import inspection
from tlsgate.commands.log import log
from tlsgate.commands.policy import POLICY_COMMANDS
from tlsgate.commands.probe import probe
from tlsgate.commands.serve import serve
from tlsgate.commands.store import STORE_COMMANDS
from tlsgate.errors import TlsgateError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    prog_name="tlsgate",
    message=f"%(prog)s %(version)s ({build.describe()}; {build.interpreter()})",
)
def cli() -> None:
    """tlsgate: a forward web proxy that inspects HTTPS and knows when it must not."""


for command in (serve, ca, log, probe, inspection, admin, *STORE_COMMANDS, *POLICY_COMMANDS):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="tlsgate", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tlsgate: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # One line, as the rest of tlsgate's errors: "tlsgate: error: <what> (<fix>)".
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"tlsgate: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except TlsgateError as exc:
        click.echo(f"tlsgate: error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
