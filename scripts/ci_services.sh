#!/usr/bin/env bash
# Services the CPU test suite talks to: a throwaway PostgreSQL server on loopback, from Debian's packages.
#
#   source scripts/ci_services.sh     # exports HARNESS_TEST_POSTGRES_URL for the tests that follow
#   scripts/ci_services.sh            # prints HARNESS_TEST_POSTGRES_URL=postgresql://...
#   scripts/ci_services.sh stop       # stops the server and deletes its cluster
#
# Installs postgresql with apt-get when no server binaries are present, creates a cluster in
# $HARNESS_PG_DIR (default /tmp/harness-ci-pg) listening on 127.0.0.1:$HARNESS_PG_PORT (default 55432) only,
# with trust authentication on loopback (a test server, nothing else reaches it), and a database
# $HARNESS_PG_DB (default harness_test). Running it again reuses a server that is already up.
# Also installs Debian's chromium + chromium-driver for the browser test (HARNESS_CI_BROWSER=0 skips).

_harness_ci_services() {
    set -euo pipefail
    local dir="${HARNESS_PG_DIR:-/tmp/harness-ci-pg}" port="${HARNESS_PG_PORT:-55432}"
    local db="${HARNESS_PG_DB:-harness_test}" user=postgres
    local packages=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
    if [[ "${HARNESS_CI_BROWSER:-1}" != 0 ]] && ! command -v chromium >/dev/null; then
        packages+=(chromium chromium-driver)
    fi
    if ((${#packages[@]})); then
        local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
    fi
    local bin
    bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"

    # PostgreSQL refuses to run as root: as root the cluster belongs to the postgres user.
    local as=()
    if [[ $(id -u) == 0 ]]; then as=(runuser -u postgres --); else user="$(id -un)"; fi

    if [[ "${1:-}" == stop ]]; then
        [[ -d "$dir/data" ]] && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
        rm -rf "$dir"
        return 0
    fi

    if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        rm -rf "$dir"
        mkdir -p "$dir"
        [[ $(id -u) == 0 ]] && chown postgres: "$dir"
        "${as[@]}" "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust --encoding=UTF8 --no-instructions >&2
        "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" >&2
    fi
    if [[ -z "$("${as[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
        "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db"
    fi
    HARNESS_TEST_POSTGRES_URL="postgresql://$user@127.0.0.1:$port/$db"
    export HARNESS_TEST_POSTGRES_URL
    echo "HARNESS_TEST_POSTGRES_URL=$HARNESS_TEST_POSTGRES_URL"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _harness_ci_services "$@"
else
    # Sourced: keep the caller's shell options as they were.
    _harness_saved_opts="$(set +o)"
    _harness_ci_services "$@"
    eval "$_harness_saved_opts"
    unset _harness_saved_opts
fi
