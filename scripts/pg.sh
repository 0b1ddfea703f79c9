#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for tests and benchmarks: initdb into a directory of its own, run by
# an unprivileged user, listening on a unix socket only (no TCP port at all), never the system
# service.
#
#   scripts/pg.sh start [DIR]   start it (initdb first if DIR is new); prints its libpq URL
#   scripts/pg.sh url [DIR]     prints the URL (it must be running)
#   scripts/pg.sh stop [DIR]    stops it (fast shutdown); DIR stays
#   scripts/pg.sh destroy [DIR] stops it and removes DIR
#
# DIR defaults to $SEGUE_TEST_PG_DIR or /tmp/segue-test-pg. `start` is idempotent and safe to run
# from several processes at once (flock): the first starts the server, the others wait and reuse
# it. Settings are for tests (fsync off: the tests kill segue, never the database); the benchmark
# passes SEGUE_PG_DURABLE=1 to keep PostgreSQL's defaults (fsync on, synchronous_commit on).
# SEGUE_PG_OPTIONS adds server options (e.g. "-c shared_preload_libraries=pg_stat_statements").
set -euo pipefail

cmd="${1:-start}"
dir="${2:-${SEGUE_TEST_PG_DIR:-/tmp/segue-test-pg}}"
user="${SEGUE_PG_USER:-segue-pg}"
bin=/usr/lib/postgresql/15/bin
port=5432 # names the socket file only (listen_addresses is empty)

url() { echo "postgresql:///segue?host=$dir/run&port=$port&user=segue"; }

as_user() { runuser -u "$user" -- "$@"; }

case "$cmd" in
  url)
    url
    exit 0
    ;;
  stop | destroy)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
      as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [[ "$cmd" == destroy ]] && rm -rf "$dir" "$dir.lock"
    exit 0
    ;;
  start) ;;
  *)
    echo "usage: $0 start|url|stop|destroy [DIR]" >&2
    exit 2
    ;;
esac

if [[ ! -x "$bin/postgres" ]]; then
  echo "pg.sh: PostgreSQL 15 is not installed (scripts/setup.sh --test installs it)" >&2
  exit 1
fi
if [[ $(id -u) -eq 0 ]]; then
  id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
else
  user="$(id -un)"
  as_user() { "$@"; }
fi

mkdir -p "$dir"
chown "$user" "$dir" 2>/dev/null || true
exec 9>"$dir.lock"
flock 9

if ! as_user "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    rm -rf "$dir/data"
    as_user "$bin/initdb" -D "$dir/data" -U segue -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  mkdir -p "$dir/run"
  chown "$user" "$dir/run"
  durable=()
  if [[ "${SEGUE_PG_DURABLE:-0}" != 1 ]]; then
    durable=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
  fi
  as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "$(printf '%q ' \
    -c listen_addresses= -c unix_socket_directories="$dir/run" -c port=$port \
    -c max_connections=400 -c shared_buffers=256MB -c max_wal_size=2GB \
    "${durable[@]}" ${SEGUE_PG_OPTIONS:-})" >/dev/null 9>&- ||
    { tail -20 "$dir/server.log" >&2; exit 1; }
  as_user "$bin/psql" -h "$dir/run" -p $port -U segue -d postgres -qAt -c \
    "SELECT 1 FROM pg_database WHERE datname = 'segue'" | grep -q 1 ||
    as_user "$bin/psql" -h "$dir/run" -p $port -U segue -d postgres -q -c "CREATE DATABASE segue" >/dev/null
fi
url
