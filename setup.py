"""Build: compile the modules every request runs through with mypyc.

The metadata lives in pyproject.toml; this file only adds the compiled extensions.
``TLSGATE_COMPILE`` chooses (docs/install.md, "Compiled modules"):

    auto (default)  compile when mypyc, a C compiler and Python's headers are at hand,
                    otherwise (or if mypyc fails) install pure Python and say why
    yes             compile, or fail the install saying what is missing
    no              pure Python

Compiled or not, the behaviour is the same: the modules are plain Python, type-checked
with mypy --strict, and the test suite runs against both (scripts/test.sh).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

# Per-request modules: the HTTP/1 layer, the proxy, the log record and writer, the
# access decision and the client-certificate hook.
COMPILED = [
    "src/tlsgate/http1/events.py",
    "src/tlsgate/http1/headers.py",
    "src/tlsgate/http1/reader.py",
    "src/tlsgate/http1/target.py",
    "src/tlsgate/http1/writer.py",
    "src/tlsgate/log/record.py",
    "src/tlsgate/log/writer.py",
    "src/tlsgate/policy/access.py",
    "src/tlsgate/proxy/connection.py",
    "src/tlsgate/proxy/probe.py",
    "src/tlsgate/proxy/runtime.py",
    "src/tlsgate/proxy/server.py",
    "src/tlsgate/proxy/session.py",
    "src/tlsgate/proxy/upstream.py",
    "src/tlsgate/tls/upstream.py",
]
MODES = ("auto", "yes", "no")
# Commands that only write metadata: no need to type-check and generate C for them
# (pip asks for metadata before it builds).
METADATA_ONLY = {"egg_info", "dist_info", "sdist", "--version", "--name"}


def _missing() -> str | None:
    """What compiling needs and this machine lacks, or None."""
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc (pip install mypy)"
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"a C compiler ({cc}; apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "Python's C headers (apt-get install python3-dev)"
    return None


def _remove_built_in_place() -> None:
    """A pure build removes compiled modules an earlier editable build left in src/:
    Python would load them before the sources."""
    for path in Path(__file__).resolve().parent.joinpath("src").rglob("*.so"):
        path.unlink()


def _pure(why: str) -> list[object]:
    """``auto`` could not compile: say why, and build pure Python."""
    print(f"tlsgate: installing pure Python (slower): {why}; see docs/install.md", file=sys.stderr)
    _remove_built_in_place()
    return []


def _ext_modules() -> list[object]:
    mode = os.environ.get("TLSGATE_COMPILE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        sys.exit(f"tlsgate: TLSGATE_COMPILE={mode!r} is not one of {', '.join(MODES)}")
    if mode == "no":
        _remove_built_in_place()
        return []
    if set(sys.argv[1:]) & METADATA_ONLY:
        return []
    missing = _missing()
    if missing is not None:
        if mode == "yes":
            sys.exit(f"tlsgate: cannot compile (TLSGATE_COMPILE=yes): missing {missing}")
        return _pure(f"missing {missing}")
    from mypyc.build import mypycify

    try:
        return list(mypycify(COMPILED, opt_level="3", group_name="tlsgate"))
    except SystemExit as exc:  # mypyc's type check failed (it printed the errors)
        if mode == "yes":
            raise
        return _pure(f"mypyc failed ({exc.code})")


setup(ext_modules=_ext_modules())
