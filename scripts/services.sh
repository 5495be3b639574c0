#!/usr/bin/env bash
# Make sure the tests (and the demo / benchmarks) have a Redis and a PostgreSQL to talk to.
#
#   scripts/services.sh [up]   check TEST_REDIS_URL / TEST_PG_URL (defaults below); for each one that
#                              does not answer, start a throwaway server of our own under .local/ on
#                              a free port (or reuse the one started before). Writes the URLs to use
#                              to .local/services.env and prints them as `export ...` lines, so
#                              `eval "$(scripts/services.sh)"` works too. Progress goes to stderr.
#   scripts/services.sh down   stop only the servers this script started under .local/
#                              (add --purge to also delete their data).
#   scripts/services.sh status show what is used and what of ours is running.
#
# The machine's own servers are only ever connected to, never started, stopped or changed.
# Missing redis-server / PostgreSQL binaries are installed with apt-get, only when a throwaway
# server is actually needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
ENV_FILE="$LOCAL/services.env"
REDIS_DIR="$LOCAL/redis"
PG_DIR="$LOCAL/pg" # holds `port` and `base` (the folder with data/, sock/, log)

DEFAULT_REDIS_URL="redis://127.0.0.1:6379/0"
DEFAULT_PG_URL="postgresql://postgres@127.0.0.1:5432/postgres"

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    printf 'services: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- helpers

# host and port of a URL: sets URL_HOST / URL_PORT
parse_url() {
    local url="$1" default_port="$2" rest hostport
    rest="${url#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    hostport="${rest##*@}"
    if [[ "$hostport" =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then
        URL_HOST="${BASH_REMATCH[1]}"
        URL_PORT="${BASH_REMATCH[3]:-$default_port}"
    elif [[ "$hostport" =~ ^([^:]*)(:([0-9]+))?$ ]]; then
        URL_HOST="${BASH_REMATCH[1]:-127.0.0.1}"
        URL_PORT="${BASH_REMATCH[3]:-$default_port}"
    else
        URL_HOST=127.0.0.1
        URL_PORT=$default_port
    fi
}

tcp_open() { # host port
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

port_free() { ! tcp_open 127.0.0.1 "$1"; }

free_port() { # first free port from $1 upwards
    local p
    for ((p = $1; p < $1 + 200; p++)); do
        if port_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port in $1..$(($1 + 199))"
}

# the project's venv python when it can import psycopg and redis: then checks are real logins
VENV_PY=""
if [[ -x "$ROOT/.venv/bin/python" ]] && "$ROOT/.venv/bin/python" -c 'import psycopg, redis' 2>/dev/null; then
    VENV_PY="$ROOT/.venv/bin/python"
fi

redis_ok() { # url
    local url="$1" reply
    if [[ -n "$VENV_PY" ]]; then
        "$VENV_PY" - "$url" <<'EOF' >/dev/null 2>&1
import sys, redis
c = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3, socket_timeout=3)
c.ping()
EOF
        return
    fi
    if command -v redis-cli >/dev/null 2>&1; then
        reply="$(timeout 5 redis-cli -u "$url" ping 2>/dev/null </dev/null)" || return 1
        [[ "$reply" == PONG ]]
        return
    fi
    parse_url "$url" 6379
    reply="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && head -c 5 <&3' _ "$URL_HOST" "$URL_PORT" 2>/dev/null)" || return 1
    [[ "$reply" == +PONG* ]]
}

pg_ok() { # url
    local url="$1"
    if [[ -n "$VENV_PY" ]]; then
        "$VENV_PY" - "$url" <<'EOF' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
EOF
        return
    fi
    if command -v psql >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=3 psql "$url" -Atqc 'select 1' </dev/null >/dev/null 2>&1
        return
    fi
    parse_url "$url" 5432
    tcp_open "$URL_HOST" "$URL_PORT"
}

apt_install() { # packages...
    command -v apt-get >/dev/null 2>&1 || die "need $*, and there is no apt-get to install it; install it by hand"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need $*; run as root or install it by hand"
        sudo=(sudo)
    fi
    log "installing $* with apt-get"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------- redis

redis_port_file="$REDIS_DIR/port"

our_redis_url() { [[ -f "$redis_port_file" ]] && echo "redis://127.0.0.1:$(cat "$redis_port_file")/0"; }

start_redis() {
    local port url
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not found after installing"
    mkdir -p "$REDIS_DIR"
    port=""
    [[ -f "$redis_port_file" ]] && port="$(cat "$redis_port_file")"
    if [[ -z "$port" ]] || ! port_free "$port"; then port="$(free_port 16379)"; fi
    log "starting a throwaway redis-server on 127.0.0.1:$port (in .local/redis)"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" >&2
    echo "$port" >"$redis_port_file"
    url="redis://127.0.0.1:$port/0"
    for _ in $(seq 50); do
        redis_ok "$url" && return 0
        sleep 0.1
    done
    die "redis-server did not answer on port $port; see $REDIS_DIR/redis.log"
}

stop_redis() {
    local pid port
    [[ -f "$REDIS_DIR/redis.pid" ]] || return 0
    pid="$(cat "$REDIS_DIR/redis.pid")"
    port="$(cat "$redis_port_file" 2>/dev/null || true)"
    # only the process we started: its pid file, and a redis-server command line with our port
    if [[ -n "$pid" ]] && [[ -r "/proc/$pid/cmdline" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*:${port}\b"; then
        log "stopping our redis-server (pid $pid, port $port)"
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$REDIS_DIR/redis.pid"
}

# ---------------------------------------------------------------- postgres

pg_port_file="$PG_DIR/port"

our_pg_url() { [[ -f "$pg_port_file" ]] && echo "postgresql://postgres@127.0.0.1:$(cat "$pg_port_file")/postgres"; }

pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && {
            echo "$d"
            return 0
        }
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

# run a command as the user that owns the throwaway cluster (postgres refuses to run as root)
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# the folder for data/, sock/ and the log: .local/pg when the cluster's user can write there,
# else a folder under /tmp named after this checkout
pg_base() {
    if [[ -f "$PG_DIR/base" ]]; then
        cat "$PG_DIR/base"
        return
    fi
    local base="$PG_DIR/cluster"
    mkdir -p "$base"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$base"
        if ! runuser -u postgres -- test -w "$base"; then
            rmdir "$base"
            base="/tmp/bsky-indexer-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-10)"
            mkdir -p "$base"
            chown postgres: "$base"
        fi
    fi
    echo "$base" >"$PG_DIR/base"
    echo "$base"
}

start_pg() {
    local bindir base port url
    mkdir -p "$PG_DIR"
    if ! bindir="$(pg_bindir)"; then
        apt_install postgresql
        bindir="$(pg_bindir)" || die "PostgreSQL binaries still not found after installing"
    fi
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        log "creating the system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    base="$(pg_base)"
    if [[ ! -f "$base/data/PG_VERSION" ]]; then
        log "initdb of a throwaway cluster in $base/data"
        rm -rf "$base/data"
        as_pg "$bindir/initdb" -D "$base/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$PG_DIR/initdb.log" 2>&1 || {
            cat "$PG_DIR/initdb.log" >&2
            die "initdb failed"
        }
    fi
    as_pg mkdir -p "$base/sock"
    port=""
    [[ -f "$pg_port_file" ]] && port="$(cat "$pg_port_file")"
    if [[ -z "$port" ]] || ! port_free "$port"; then port="$(free_port 15432)"; fi
    log "starting a throwaway postgres on 127.0.0.1:$port (data in $base/data)"
    # a stale server of ours (say on an old port) is stopped first
    as_pg "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1 &&
        as_pg "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >&2
    as_pg "$bindir/pg_ctl" -D "$base/data" -l "$base/postgres.log" -w -t 60 start \
        -o "-p $port -k '$base/sock' -c listen_addresses=127.0.0.1" >/dev/null 2>&1 || {
        tail -n 20 "$base/postgres.log" >&2 || true
        die "postgres did not start"
    }
    echo "$port" >"$pg_port_file"
    url="postgresql://postgres@127.0.0.1:$port/postgres"
    for _ in $(seq 50); do
        pg_ok "$url" && return 0
        sleep 0.1
    done
    die "postgres did not answer on port $port; see $base/postgres.log"
}

stop_pg() {
    local bindir base
    [[ -f "$PG_DIR/base" ]] || return 0
    base="$(cat "$PG_DIR/base")"
    [[ -f "$base/data/postmaster.pid" ]] || return 0
    bindir="$(pg_bindir)" || return 0
    if as_pg "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
        log "stopping our postgres (data in $base/data)"
        as_pg "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null
    fi
}

# ---------------------------------------------------------------- tools the tests start

# Tests that restart a database server or go through pgbouncer start their own throwaway
# PostgreSQL cluster and Debian's pgbouncer (tests/throwaway_servers.py); install the binaries
# when missing. Without root, sudo or apt-get those tests are skipped, with the reason.
ensure_test_tools() {
    local missing=()
    command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
    pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ! (apt_install "${missing[@]}"); then
        log "warning: could not install ${missing[*]}; the tests that need them will be skipped"
    fi
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    return 0
}

# ---------------------------------------------------------------- commands

cmd_up() {
    local redis_url="${TEST_REDIS_URL:-$DEFAULT_REDIS_URL}"
    local pg_url="${TEST_PG_URL:-$DEFAULT_PG_URL}"
    local ours
    mkdir -p "$LOCAL"

    if redis_ok "$redis_url"; then
        log "redis: $redis_url answers"
    elif ours="$(our_redis_url)" && redis_ok "$ours"; then
        log "redis: $redis_url does not answer; reusing ours at $ours"
        redis_url="$ours"
    else
        log "redis: $redis_url does not answer"
        start_redis
        redis_url="$(our_redis_url)"
    fi

    if pg_ok "$pg_url"; then
        log "postgres: $(redact "$pg_url") answers"
    elif ours="$(our_pg_url)" && pg_ok "$ours"; then
        log "postgres: $(redact "$pg_url") does not answer; reusing ours at $ours"
        pg_url="$ours"
    else
        log "postgres: $(redact "$pg_url") does not answer"
        start_pg
        pg_url="$(our_pg_url)"
    fi

    ensure_test_tools

    local tmp="$ENV_FILE.$$"
    {
        printf 'export TEST_REDIS_URL=%q\n' "$redis_url"
        printf 'export TEST_PG_URL=%q\n' "$pg_url"
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
    cat "$ENV_FILE"
}

redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

cmd_down() {
    stop_redis
    stop_pg
    rm -f "$ENV_FILE"
    if [[ "${1:-}" == --purge ]]; then
        local base=""
        [[ -f "$PG_DIR/base" ]] && base="$(cat "$PG_DIR/base")"
        [[ -n "$base" && "$base" != "$PG_DIR"* ]] && rm -rf "$base"
        rm -rf "$REDIS_DIR" "$PG_DIR"
        log "removed the throwaway servers' data"
    fi
}

cmd_status() {
    [[ -f "$ENV_FILE" ]] && {
        echo "# $ENV_FILE"
        cat "$ENV_FILE"
    }
    local url
    if url="$(our_redis_url)" && redis_ok "$url"; then echo "ours: redis at $url (running)"; fi
    if url="$(our_pg_url)" && pg_ok "$url"; then echo "ours: postgres at $url (running)"; fi
    return 0
}

case "${1:-up}" in
up) cmd_up ;;
down | stop) cmd_down "${2:-}" ;;
status) cmd_status ;;
*) die "usage: $0 [up|down [--purge]|status]" ;;
esac
