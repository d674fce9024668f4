"""The build: what setup.py compiles, what it needs, and how a stale build is caught."""

from __future__ import annotations

import ast
import os
import re
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

from tlsgate import build
from tlsgate.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SO = "cpython-311-x86_64-linux-gnu.so"


def _compiled_list() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMPILED list")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()


def test_the_build_environment_has_every_runtime_dependency():
    # mypyc type-checks the compiled modules with their imports, as mypy does: in pip's
    # isolated build environment the runtime dependencies must be there too.
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build_requires = {_name(r): r for r in meta["build-system"]["requires"]}
    for dep in meta["project"]["dependencies"]:
        assert build_requires.get(_name(dep)) == dep, f"build-system.requires lacks {dep}"
    test_mypy = next(r for r in meta["project"]["optional-dependencies"]["test"] if "mypy" in r)
    assert build_requires["mypy"] == test_mypy  # compiled with the mypy that type-checks


def test_every_compiled_module_exists_and_the_probe_is_among_them():
    compiled = _compiled_list()
    assert compiled[0] == "src/tlsgate/http1/events.py"
    assert "src/tlsgate/http1/reader.py" in compiled  # build.compiled() looks at it
    for path in compiled:
        assert (ROOT / path).is_file(), path


def test_stale_compiled_modules_are_found_in_a_checkout(tmp_path):
    package = tmp_path / "src" / "tlsgate"
    (package / "http1").mkdir(parents=True)
    (tmp_path / "setup.py").write_text("")
    fresh_py, fresh_so = package / "a.py", package / f"a.{SO}"
    old_py, old_so = package / "http1" / "b.py", package / "http1" / f"b.{SO}"
    for path in (fresh_py, fresh_so, old_py, old_so):
        path.write_text("")
    os.utime(fresh_py, (1_000, 1_000))
    os.utime(fresh_so, (2_000, 2_000))
    os.utime(old_so, (1_000, 1_000))
    os.utime(old_py, (2_000, 2_000))
    assert build.stale(package) == ["tlsgate/http1/b.py"]
    (tmp_path / "setup.py").unlink()  # an installed package: times mean nothing
    assert build.stale(package) == []


def test_version_says_how_the_modules_run():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tlsgate 0.1.0 ({build.describe()}; {build.interpreter()})"
    assert sys.executable in result.output  # which interpreter: builds differ in speed
    expected = os.environ.get("TLSGATE_EXPECT_BUILD")
    if expected:  # scripts/test.sh says which build it runs
        assert build.compiled() is (expected == "compiled")
