# Shared by install.sh, test.sh and bench.sh (sourced after they cd to the checkout).

# Whether interpreter $1 is a Python tlsgate runs on (3.11 or newer).
python_supported() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# Debian marks its python3 "externally managed" (PEP 668). These scripts install into
# $PYTHON anyway (a machine dedicated to tlsgate, a CI runner, a benchmark box), which
# leaves apt's own files untouched: add --break-system-packages to pip_args there only.
allow_system_pip() {
    if "$PYTHON" - <<'PY'
import pathlib, sys, sysconfig
marker = pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
sys.exit(0 if marker.exists() and sys.prefix == sys.base_prefix else 1)
PY
    then
        pip_args+=(--break-system-packages)
        return 0
    fi
    return 1
}

# Debian packages setup.py needs to compile tlsgate's per-request modules with mypyc
# (docs/install.md, "Compiled modules"): a C compiler, the C library's headers and the
# headers of $PYTHON. Prints the missing ones (none: empty).
compile_packages_missing() {
    local missing=()
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    [ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
    "$PYTHON" - <<'PY' || missing+=(python3-dev)
import pathlib, sys, sysconfig
sys.exit(0 if (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists() else 1)
PY
    echo "${missing[*]}"
}
