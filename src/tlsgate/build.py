"""How this installation runs its per-request modules: compiled by mypyc, or pure Python.

``setup.py`` compiles them when it can (``TLSGATE_COMPILE``, docs/install.md).  An
editable install builds the compiled modules next to their sources, and Python then
loads the compiled one: edit the source and the old code keeps running until the next
``pip install -e .``.  :func:`stale` finds those, so ``tlsgate serve`` can say so and
the test suite can refuse to test old code.
"""

from __future__ import annotations

import importlib.machinery
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_PROBE = _PACKAGE / "http1" / "reader.py"
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _compiled_with_sources(package: Path) -> Iterator[tuple[Path, Path]]:
    """Each compiled module under ``package`` with the source it was built from."""
    for ext in package.rglob("*.so"):
        suffix = next((s for s in _SUFFIXES if ext.name.endswith(s)), None)
        if suffix is not None:
            yield ext, ext.with_name(ext.name[: -len(suffix)] + ".py")


def compiled() -> bool:
    """True when the per-request modules are the compiled ones."""
    import tlsgate.http1.reader as probe  # one of setup.py's COMPILED modules

    return Path(probe.__file__ or "").resolve() != _PROBE


def describe() -> str:
    """``compiled with mypyc`` or ``pure Python``, as ``tlsgate --version`` shows it."""
    return "compiled with mypyc" if compiled() else "pure Python"


def interpreter() -> str:
    """``CPython 3.11.2 at /usr/bin/python3``: which interpreter runs tlsgate.  Builds
    of one Python version differ in speed: tlsgate needs ~15 % less CPU per request on
    Debian's python3 than on a pyenv build without ``--enable-optimizations``
    (docs/install.md, "Which Python")."""
    return f"{platform.python_implementation()} {platform.python_version()} at {sys.executable}"


def stale(package: Path = _PACKAGE) -> list[str]:
    """Modules whose compiled form is older than their source, in a checkout (an
    editable install; an installed wheel's files carry no meaningful times)."""
    if not (package.parent.parent / "setup.py").exists():
        return []
    out = []
    for ext, source in _compiled_with_sources(package):
        if source.exists() and source.stat().st_mtime > ext.stat().st_mtime:
            out.append(str(source.relative_to(package.parent)))
    return sorted(out)


def stale_message(modules: list[str]) -> str:
    return (
        f"compiled modules are older than their sources ({', '.join(modules)}): the old "
        "code runs; rebuild with 'pip install -e .', or set TLSGATE_COMPILE=no for "
        "pure Python (docs/install.md)"
    )
