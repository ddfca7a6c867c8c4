#!/usr/bin/env bash
# Install everything the project needs to build, test and run its demo:
#   1. Debian packages (Prosody for the test server, SQLite for its MUC log,
#      openssl for its certificate, ejabberd for the tests and benchmarks that
#      check the bridge on a second server, redis-server for the throwaway
#      Redis of the [redis] source's tests, Python with venv and headers);
#   2. a virtualenv in .venv with the project installed editable, plus its
#      test tools.
# Idempotent, and quick when everything is already there: apt is only used
# for missing packages, and pip only runs when pyproject.toml has changed
# since the last successful install (a stamp file in .venv records it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(prosody lua-dbi-sqlite3 openssl ejabberd redis-server python3 python3-venv python3-dev
    chromium chromium-driver)
VENV=.venv

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages ------------------------------------------------------

missing=()
for package in "${APT_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing Debian packages; as root run: apt-get install ${missing[*]}"
    fi
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The tests run their own throwaway Prosody, ejabberd and Redis; keep the
    # packages from starting system-wide ones while they install (unless a
    # policy exists): policy-rc.d exiting 101 forbids starting any service.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if ((made_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi
else
    say "Debian packages present"
fi

# --- 1b. MediaWiki, for the end-to-end tests -----------------------------------
# tests/mediawiki and tests/rc2udp run a real MediaWiki (harness/mediawiki.py):
# Debian's package, SQLite, served by PHP's built-in server (php -S), so no
# Apache. The package depends on "apache2 | httpd": an empty local package
# that provides "httpd" satisfies it; php8.2-cgi satisfies php8.2's need for
# a web SAPI. (The test harness does the same when it runs as root.)
# php-redis: MediaWiki's RedisPubSubFeedEngine needs it (tests/mediawiki's
# Redis end-to-end test); it starts no service.

MEDIAWIKI_PACKAGES=(mediawiki php-sqlite3 php-cli php8.2-cgi php-redis)
DUMMY_HTTPD=xmlrc-httpd-dummy

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

mw_missing=()
for package in "${MEDIAWIKI_PACKAGES[@]}"; do
    installed "$package" || mw_missing+=("$package")
done

if ((${#mw_missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "MediaWiki (for the tests) is missing; as root run: bash scripts/install.sh"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! installed "$DUMMY_HTTPD"; then
        say "installing $DUMMY_HTTPD (provides httpd, so mediawiki does not pull in Apache)"
        dummy=$(mktemp -d)
        mkdir -p "$dummy/pkg/DEBIAN"
        printf '%s\n' \
            "Package: $DUMMY_HTTPD" \
            "Version: 1.0" \
            "Architecture: all" \
            "Maintainer: xmlrc <root@localhost>" \
            "Provides: httpd" \
            "Description: empty package satisfying mediawiki's \"apache2 | httpd\"" \
            " The xmlrc tests serve MediaWiki with PHP's built-in server (php -S)." \
            >"$dummy/pkg/DEBIAN/control"
        dpkg-deb --build "$dummy/pkg" "$dummy/$DUMMY_HTTPD.deb" >/dev/null
        dpkg -i "$dummy/$DUMMY_HTTPD.deb" >/dev/null
        rm -rf "$dummy"
    fi
    say "apt-get install ${mw_missing[*]} (half a minute on a fresh machine)"
    if ! apt-get install -y -qq --no-install-recommends "${mw_missing[@]}" >/dev/null; then
        apt-get update -qq    # stale or missing package lists
        apt-get install -y -qq --no-install-recommends "${mw_missing[@]}" >/dev/null
    fi
else
    say "MediaWiki present ($(dpkg-query -W -f='${Version}' mediawiki))"
fi

# --- 2. Python >= 3.11 --------------------------------------------------------

python_ok() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

python=""
for candidate in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
        python=$(command -v "$candidate")
        break
    fi
done
[[ -n $python ]] || die "need Python >= 3.11 with the venv module (found: $(python3 --version 2>&1 || echo none))"

# --- 3. The virtualenv ----------------------------------------------------------

if [[ -x $VENV/bin/python ]] && python_ok "$VENV/bin/python"; then
    say "virtualenv $VENV present ($("$VENV/bin/python" --version))"
else
    say "creating $VENV with $python ($("$python" --version))"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
fi

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -e $stamp ]]; then
    say "project already installed for this pyproject.toml"
else
    say "pip install -e '.[test]' (a minute on a fresh machine)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

say "ready: $VENV/bin/python, prosody $(dpkg-query -W -f='${Version}' prosody)"
