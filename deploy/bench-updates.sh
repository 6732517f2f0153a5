#!/usr/bin/env bash
# What a row change in `messages` costs Postgres, by itself: receipt-style
# updates on today's indexes (A) and on indexes that let them be HOT (B),
# one row per transaction and 20 per transaction, side by side
# (docs/BENCHMARKS.md, Pipeline). Uses a scratch database, dropped after.
#   ./deploy/bench-updates.sh [seconds per run, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/services.sh
seconds="${1:-15}"
pgbench="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pgbench"
db=herald_bench_updates
psql_() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -X -q "$@"; }
psql_ -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
trap 'psql_ -c "DROP DATABASE IF EXISTS $db"' EXIT
psql_ -v ON_ERROR_STOP=1 -d "$db" -f tests/bench-sql/updates.sql
scripts="$(mktemp -d)"
# Every update changes `state` (as a receipt does), so none is HOT on A.
flip="state = CASE state WHEN 'read' THEN 'delivered' ELSE 'read' END, read_at = now()"
for t in a b; do
  printf '\\set id random(1, 200000)\nUPDATE m_%s SET %s WHERE id = :id;\n' \
    "$t" "$flip" > "$scripts/one_$t.sql"
  printf '\\set id random(1, 199980)\nUPDATE m_%s SET %s WHERE id BETWEEN :id AND :id + 19;\n' \
    "$t" "$flip" > "$scripts/batch_$t.sql"
done
tps() {
  "$pgbench" -h 127.0.0.1 -U postgres -n -c 4 -j 2 -T "$seconds" -f "$1" "$db" 2>/dev/null |
    awk '/^tps/ { printf "%.0f", $3 }'
}
echo "rows updated per second, pgbench -c 4 -j 2 -T $seconds (A: today's indexes, B: HOT)"
for kind in one batch; do
  rows=1; [ "$kind" = batch ] && rows=20
  a=$(( $(tps "$scripts/${kind}_a.sql") * rows ))
  b=$(( $(tps "$scripts/${kind}_b.sql") * rows ))
  printf '  %-2s row(s) per transaction   A %7d   B %7d   B/A %s\n' "$rows" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')"
done
psql_ -d "$db" -At -c "SELECT relname || ': ' || n_tup_upd || ' updates, ' || n_tup_hot_upd || ' HOT'
                        FROM pg_stat_user_tables ORDER BY relname" | sed 's/^/  /'
