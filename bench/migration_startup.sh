#!/usr/bin/env bash
# Start-up with a migration pending: times launch -> port file of $SEGUE_BIN (default
# build/segue) on a copy of the SQLite database DB as it is, then on another copy after UNDO_SQL
# (the SQL that takes the newest migration back out, as an upgrade finds the database), and says
# which migrations the second start applied. Each start is stopped with SIGTERM; copies go under
# $BENCH_WORK (default /tmp/segue-migration-startup) and are removed at the end.
#
#   bench/migration_startup.sh DB UNDO_SQL
#   e.g. (bench/README 6o, migration 12 on bench/big_db.sh's 1M-task database):
#   bench/migration_startup.sh /tmp/segue-big-db/big.db \
#     "DROP INDEX tasks_unfinished; DELETE FROM schema_migrations WHERE version = 12;"
set -euo pipefail
src="$1"
undo="$2"
bin="${SEGUE_BIN:-$(dirname "$0")/../build/segue}"
w="${BENCH_WORK:-/tmp/segue-migration-startup}"
rm -rf "$w"
mkdir -p "$w/blobs"
trap 'rm -rf "$w"' EXIT
cat >"$w/c.yaml" <<YAML
server:
  listen: 127.0.0.1:0
log:
  level: info
storage:
  sqlite_path: $w/segue.db
  blob_dir: $w/blobs
YAML
start() {
    rm -f "$w/port"
    local t0 t1 pid
    t0=$(date +%s%N)
    "$bin" --config "$w/c.yaml" --port-file "$w/port" >"$w/log" 2>&1 &
    pid=$!
    while [ ! -s "$w/port" ]; do
        kill -0 "$pid" 2>/dev/null || { cat "$w/log"; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    echo "$1: ready after $(((t1 - t0) / 1000000)) ms; migrations applied:" \
        "$(grep -o '"msg":"store migration applied","version":[0-9]*' "$w/log" |
            grep -o '[0-9]*$' | tr '\n' ' ')"
    kill -TERM "$pid"
    wait "$pid" || true
}
copy() {
    cp "$src" "$w/segue.db"
    rm -f "$w/segue.db-wal" "$w/segue.db-shm"
}
copy
start "as it is"
copy
sqlite3 "$w/segue.db" "$undo"
start "with the newest migration pending"
echo "database: $(du -h "$src" | cut -f1), $(sqlite3 "$src" 'SELECT COUNT(*) FROM tasks') tasks"
