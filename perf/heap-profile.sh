#!/usr/bin/env bash
# Where a kind of shape's memory goes: heaptrack over the server while N
# shapes of one kind are created, then the peak heap per call path.
#
#   bash perf/heap-profile.sh member 2000   # project_id IN (SELECT .. WHERE user_id = $1)
#   bash perf/heap-profile.sh plain 2000    # project_id = k
#
# Builds the server with the system allocator (`--features system-alloc`:
# heaptrack does not see mimalloc's allocations) into target/heap, starts
# a throwaway Postgres (as the `postgres` user when root), and leaves
# target/heap-profile/<kind>/{heap.zst,peaks.txt,fold.txt}. Compare two
# kinds' fold.txt (collapsed stacks weighted by peak bytes) to see what
# one costs more than the other. Needs heaptrack (apt-get install heaptrack).
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-member}
N=${2:-2000}
case "$KIND" in member|plain) ;; *) echo "kind must be member or plain, not '$KIND'" >&2; exit 2 ;; esac
command -v heaptrack >/dev/null || { echo "heaptrack is not installed: apt-get install heaptrack" >&2; exit 2; }
cargo build --release --features system-alloc --bin shapeshard --target-dir target/heap
BIN=$PWD/target/heap/release/shapeshard
OUT=$PWD/target/heap-profile/$KIND
rm -rf "$OUT" && mkdir -p "$OUT"
PGDIR=$(mktemp -d)
RUN=()
if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; RUN=(su postgres -c); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg() { if [ ${#RUN[@]} -gt 0 ]; then "${RUN[@]}" "$*"; else bash -c "$*"; fi; }
pg "initdb -D $PGDIR/data -A trust >/dev/null && pg_ctl -D $PGDIR/data -o '-p $PORT -c wal_level=logical -k $PGDIR' -l $PGDIR/log start >/dev/null"
trap 'pg "pg_ctl -D $PGDIR/data stop -m fast" >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT
psql -h "$PGDIR" -p "$PORT" -U postgres -q -c "
  CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text);
  CREATE TABLE members (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
  ALTER TABLE tasks REPLICA IDENTITY FULL; ALTER TABLE members REPLICA IDENTITY FULL;
  INSERT INTO members SELECT u, u % 500 FROM generate_series(0, $N) u;
  INSERT INTO tasks SELECT g, g % 500, 't' FROM generate_series(1, 1000) g;"
DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/postgres" ELECTRIC_INSECURE=true \
  ELECTRIC_PORT=$HTTP ELECTRIC_STORAGE_DIR="$OUT/storage" SHAPESHARD_PLACEMENT=unbound \
  heaptrack -o "$OUT/heap" "$BIN" > "$OUT/server.log" 2>&1 &
HT=$!
for _ in $(seq 1 200); do curl -sf "127.0.0.1:$HTTP/v1/health" >/dev/null 2>&1 && break; sleep 0.3; done
python3 - "$KIND" "$N" "$HTTP" <<'PY'
import sys, urllib.request, urllib.parse, concurrent.futures
kind, n, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(u):
    if kind == "member":
        w = urllib.parse.quote("project_id IN (SELECT project_id FROM members WHERE user_id = $1)")
        url = f"http://127.0.0.1:{port}/v1/shape?table=tasks&offset=-1&where={w}&params%5B1%5D={u}"
    else:
        w = urllib.parse.quote(f"project_id = {u}")
        url = f"http://127.0.0.1:{port}/v1/shape?table=tasks&offset=-1&where={w}"
    return urllib.request.urlopen(url).status
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    ok = sum(1 for s in ex.map(get, range(n)) if s == 200)
print(f"{ok} of {n} {kind} shapes created")
if ok != n:
    sys.exit(1)
PY
sleep 2
kill -TERM "$(pgrep -P "$HT" -f shapeshard || pgrep -f "$BIN" | head -1)"
wait "$HT" || true
heaptrack_print -f "$OUT/heap.zst" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
  --print-leaks 0 --peak-limit 40 > "$OUT/peaks.txt"
heaptrack_print -f "$OUT/heap.zst" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
  --print-leaks 0 --flamegraph-cost-type peak -F "$OUT/fold.txt" > /dev/null
grep "peak heap memory consumption" "$OUT/peaks.txt"
echo "$OUT/peaks.txt, $OUT/fold.txt"
