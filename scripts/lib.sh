# Shared by install.sh, test.sh and bench.sh (sourced after they cd to the checkout).

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
