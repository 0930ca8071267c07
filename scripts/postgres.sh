#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and CI: never a system service.
#
#   scripts/postgres.sh start DIR   find (or install) PostgreSQL, initdb a cluster in DIR,
#                                   start it on a free 127.0.0.1 port with trust auth for
#                                   loopback only, and print its URL on stdout:
#                                   postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR    stop that server (fast shutdown) and delete DIR
#
# Binaries: $PG_BIN if set, else pg_ctl on PATH, else /usr/lib/postgresql/*/bin (newest).
# If none is found and we are root with apt-get, Debian's `postgresql` package is
# installed (its own service is not used). PostgreSQL refuses to run as root, so as root
# the cluster belongs to, and runs as, the unprivileged user `nobody`.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 2; }

find_bin() {
    if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/pg_ctl" ]]; then echo "$PG_BIN"; return; fi
    local found
    if found=$(command -v pg_ctl 2>/dev/null) && [[ -x "$(dirname "$found")/initdb" ]]; then
        dirname "$(readlink -f "$found")"; return
    fi
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$found" && -x "$found/pg_ctl" ]]; then echo "$found"; return; fi
    return 1
}

install_pg() {
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and we are not root: install the 'postgresql' package (or set PG_BIN)"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing: install PostgreSQL (or set PG_BIN)"
    echo "postgres.sh: installing Debian's postgresql package" >&2
    # no service may start during the install: this is a test server only
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    if [[ $created -eq 1 ]]; then rm -f "$policy"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_owner() {  # run a command as the cluster's owner
    if [[ $(id -u) -eq 0 ]]; then runuser -u nobody -- "$@"; else "$@"; fi
}

start() {
    local dir=$1 bin port
    bin=$(find_bin) || { install_pg; bin=$(find_bin) || die "no PostgreSQL binaries after install"; }
    mkdir -p "$dir"
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    if [[ $(id -u) -eq 0 ]]; then
        chown nobody "$dir"; chmod 700 "$dir"
        runuser -u nobody -- test -w "$dir" || die "user nobody cannot reach $dir (a parent folder is private): pick a DIR under a world-traversable folder"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # loopback only, trust auth, no durability (a test server: speed over crash safety)
    cat >"$dir/data/pg_hba.conf" <<'EOF'
host all all 127.0.0.1/32 trust
EOF
    port=$(free_port)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-h 127.0.0.1 -p $port -k $dir/data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB" >/dev/null \
        || { cat "$dir/server.log" >&2; die "the server did not start"; }
    echo "$port" >"$dir/port"
    echo "$bin" >"$dir/bin"
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

stop() {
    local dir=$1
    [[ -f "$dir/bin" ]] || die "$dir holds no server started by this script"
    as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 start DIR | stop DIR" ;;
esac
