#!/usr/bin/env bash
# Install tlsgate from this checkout into the system Python (README, command 1).
#
# Idempotent: running it again upgrades/reinstalls the same version in place.
# Environment: PYTHON=<interpreter> to choose the Python (default: python3).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
. scripts/lib.sh
export PIP_ROOT_USER_ACTION=ignore  # installing as root is what this script is for

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 \
    || die "$PYTHON not found; install Python 3.11 or newer (apt-get install python3 python3-pip)"
python_supported "$PYTHON" \
    || die "$("$PYTHON" -V 2>&1) is too old; tlsgate needs Python 3.11 or newer"
"$PYTHON" -m pip --version >/dev/null 2>&1 \
    || die "pip is missing for $PYTHON; install it with: apt-get install python3-pip"

# setup.py compiles the per-request modules with mypyc (fewer instructions per
# request: BENCHMARKS.md, "Compiled with mypyc") when a C compiler and Python's headers
# are there: as root with apt, install them; otherwise it installs pure Python and says
# so (docs/install.md).
missing="$(compile_packages_missing)"
if [ -n "$missing" ] && [ "${TLSGATE_COMPILE:-auto}" != no ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing what compiling needs: $missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086  # a list of package names
        apt-get install -y -q --no-install-recommends $missing
    else
        say "note: no $missing: tlsgate will run as pure Python (slower); see docs/install.md"
    fi
fi

# On a machine dedicated to tlsgate, into /usr/local even under PEP 668 (scripts/lib.sh).
pip_args=(--disable-pip-version-check --no-input)
if allow_system_pip; then
    say "$PYTHON is externally managed (PEP 668): installing with --break-system-packages"
fi

say "installing tlsgate from $(pwd) with $("$PYTHON" -V 2>&1)"
"$PYTHON" -m pip install "${pip_args[@]}" .

# pyenv-managed Pythons reach new console scripts through shims made by a rehash.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash || true
fi

bindir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
say "installed: $bindir/tlsgate ($(cd / && "$PYTHON" -c 'import tlsgate.build as b; print(b.describe())'))"
if ! command -v tlsgate >/dev/null 2>&1; then
    say "note: $bindir is not on PATH; run $bindir/tlsgate or add it to PATH"
fi
