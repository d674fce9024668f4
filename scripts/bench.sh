#!/usr/bin/env bash
# Benchmark tlsgate side by side with Squid (ssl-bump), mitmproxy and proxy.py on
# loopback (README; results and method in BENCHMARKS.md). Arguments go to
# `python -m benchmarks.run`:
#
#   bash scripts/bench.sh                        # full run, ~20 min on 2 cores
#   bash scripts/bench.sh --quick                # ~3 min
#   bash scripts/bench.sh --write-benchmarks-md  # also update BENCHMARKS.md
#
# Works as root on a fresh Debian 12 with no stdin: Debian packages come from apt
# (only when something is missing), mitmproxy and proxy.py go into their own
# virtualenv (benchmarks/.venv) so their dependencies never touch tlsgate's.
#
# tlsgate runs on $PYTHON, by default the distribution's python3 (/usr/bin/python3, as
# scripts/install.sh installs it on Debian 12): it is installed (`pip install .`,
# compiled) into a virtualenv of that interpreter, benchmarks/.venv-tlsgate, which also
# runs the harness. When the python3 on PATH is another interpreter (pyenv's, say),
# tlsgate is installed into it too (`pip install -e .`) and measured beside as
# `tlsgate-altpython`: builds of one Python version differ in speed (BENCHMARKS.md).
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ -x /usr/bin/python3 ] && python_supported /usr/bin/python3; then
        PYTHON=/usr/bin/python3
    fi
fi
VENV=benchmarks/.venv
export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore  # root on a benchmark machine is intended here

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

missing_packages() {
    local missing=()
    { [ -x /usr/sbin/squid ] && [ -x /usr/lib/squid/security_file_certgen ]; } \
        || missing+=(squid-openssl)
    [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # proxy.py mints with it
    command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)  # benchmarks.instructions
    command -v perf >/dev/null 2>&1 || missing+=(linux-perf)  # benchmarks.profile
    command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3)
    "$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v "$PYTHON" >/dev/null 2>&1 && missing+=($(compile_packages_missing))  # mypyc
    echo "${missing[*]}"
}

missing="$(missing_packages)"
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing: $missing; install them (apt-get) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing: $missing, and no apt-get"
    # Keep apt from starting the system squid/nginx: the benchmark runs its own on
    # free loopback ports. Only if no policy is in place already.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    say "installing Debian packages: $missing"
    apt-get update -q
    # shellcheck disable=SC2086  # a list of package names
    apt-get install -y -q --no-install-recommends $missing
    missing="$(missing_packages)"
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
fi

pip_args=(--disable-pip-version-check --no-input --quiet)

if [ ! -x "$VENV/bin/mitmdump" ] || [ ! -x "$VENV/bin/proxy" ]; then
    say "mitmproxy and proxy.py into $VENV"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install "${pip_args[@]}" 'mitmproxy>=11,<12' 'proxy.py>=2.4,<3'
fi

# Compiled (mypyc), as scripts/install.sh installs it; TLSGATE_COMPILE=no measures the
# pure-Python build.
export TLSGATE_COMPILE="${TLSGATE_COMPILE:-yes}"
TLSGATE_VENV=benchmarks/.venv-tlsgate
[ -x "$TLSGATE_VENV/bin/python" ] || "$PYTHON" -m venv "$TLSGATE_VENV"
say "pip install . into $TLSGATE_VENV ($("$PYTHON" -V 2>&1) at $(command -v "$PYTHON"), TLSGATE_COMPILE=$TLSGATE_COMPILE)"
"$TLSGATE_VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade '.[test]'

# The python3 on PATH, when it is another interpreter: measured as tlsgate-altpython.
interpreter() { readlink -f "$("$1" -c 'import sys; print(sys.executable)' 2>/dev/null)"; }
alt="$(command -v python3 >/dev/null 2>&1 && interpreter python3 || true)"
if [ -n "$alt" ] && [ "$alt" != "$(interpreter "$PYTHON")" ] && python_supported "$alt"; then
    PYTHON="$alt"  # for allow_system_pip and compile_packages_missing
    allow_system_pip || true
    if [ -z "$(compile_packages_missing)" ]; then
        say "pip install -e . into $alt ($("$alt" -V 2>&1)): measured as tlsgate-altpython"
        "$alt" -m pip install "${pip_args[@]}" -e .
        export TLSGATE_BENCH_ALT_PYTHON="$alt"
    fi
fi

say "python -m benchmarks.run $*"
exec "$TLSGATE_VENV/bin/python" -m benchmarks.run "$@"
