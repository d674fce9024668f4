#!/usr/bin/env bash
# Install what the tests need and run lint, type checks and the test suite (README,
# command 2). Extra arguments go to pytest:  bash scripts/test.sh -k nginx -x
#
# Works as root on a fresh Debian 12 with no stdin (CI=true): system packages come
# from apt (skipped when every needed program is already there), Python packages from
# pip. Exits non-zero on the first failure. TLSGATE_FORCE_APT=1 runs apt anyway.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
. scripts/lib.sh
export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore  # root on a CI machine is intended here

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

# Debian packages the test peers need. Debian 12's "nginx" package has the dav, sub
# and ssl modules built in (checked below), which the nginx test peer uses.
# chromium: the admin console's browser tests (Playwright drives /usr/bin/chromium; no
# 'playwright install' and no browser download).
# gcc, libc6-dev, python3-dev: setup.py compiles the per-request modules (mypyc), and
# the suite runs against them (then the unit tests again against pure Python).
APT_PACKAGES=(nginx apache2 postgresql curl openssl ca-certificates python3 python3-pip chromium
              gcc libc6-dev python3-dev)

missing_programs() {
    local missing=()
    [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ -x /usr/sbin/apache2 ] || missing+=(apache2)
    compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    command -v runuser >/dev/null 2>&1 || missing+=(runuser)
    command -v "$PYTHON" >/dev/null 2>&1 || missing+=("$PYTHON")
    "$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(pip)
    command -v "$PYTHON" >/dev/null 2>&1 && missing+=($(compile_packages_missing))
    echo "${missing[*]}"
}

install_system_packages() {
    [ "$(id -u)" -eq 0 ] || die "missing programs ($1) and not root: install ${APT_PACKAGES[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing programs ($1) and no apt-get"
    # Keep apt from starting the system nginx/postgresql services: the tests run their
    # own on free loopback ports. Only if no policy is in place already.
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    say "installing system packages (missing: $1)"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
}

missing="$(missing_programs)"
if [ -n "${TLSGATE_FORCE_APT:-}" ]; then
    missing="${missing:-none, TLSGATE_FORCE_APT is set}"
fi
if [ -n "$missing" ]; then
    install_system_packages "$missing"
    missing="$(missing_programs)"
    [ -z "$missing" ] || die "still missing after apt-get install: $missing"
else
    say "system packages present (nginx, postgresql, curl, openssl): skipping apt"
fi

nginx_modules="$(/usr/sbin/nginx -V 2>&1)"
for module in http_dav_module http_sub_module http_ssl_module; do
    grep -q -- "--with-$module" <<<"$nginx_modules" \
        || die "/usr/sbin/nginx lacks $module; install Debian's 'nginx' package"
done

pip_args=(--disable-pip-version-check --no-input --quiet)
allow_system_pip || true  # PEP 668: scripts/lib.sh
# Compiled (mypyc) unless TLSGATE_COMPILE=no: then the whole suite runs on pure Python.
export TLSGATE_COMPILE="${TLSGATE_COMPILE:-yes}"
say "pip install -e '.[test]' ($("$PYTHON" -V 2>&1), TLSGATE_COMPILE=$TLSGATE_COMPILE)"
"$PYTHON" -m pip install "${pip_args[@]}" -e '.[test]'

say "ruff check src tests"
"$PYTHON" -m ruff check src tests

say "mypy (strict, src/tlsgate)"
"$PYTHON" -m mypy

if [ "$TLSGATE_COMPILE" = no ]; then
    export TLSGATE_EXPECT_BUILD=pure
else
    export TLSGATE_EXPECT_BUILD=compiled
fi
say "pytest $* ($TLSGATE_EXPECT_BUILD)"
"$PYTHON" -m pytest "$@"

# The whole suite ran against the compiled modules; the unit tests run again against
# the same sources as pure Python (what an install without a C compiler runs), from a
# copy of src/ without the compiled files. Only for a full run (no pytest arguments).
if [ "$TLSGATE_EXPECT_BUILD" = compiled ] && [ "$#" -eq 0 ]; then
    pure="$(mktemp -d)"
    cp -r src "$pure/src"
    find "$pure/src" -name '*.so' -delete
    say "pytest tests/unit (pure Python, from a copy of src/ without compiled modules)"
    status=0
    PYTHONPATH="$pure/src" TLSGATE_EXPECT_BUILD=pure "$PYTHON" -m pytest -q tests/unit \
        || status=$?
    rm -rf "$pure"
    exit "$status"
fi
