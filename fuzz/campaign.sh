#!/usr/bin/env bash
# The fuzz campaign behind fuzz/REPORT.md: every target for 10M executions
# or one hour, whichever comes first, two at a time, at the lowest CPU
# priority (so it can run beside other work), then the report table.
#
#   bash fuzz/campaign.sh [work-dir]        # run, then write the table
#   bash fuzz/campaign.sh --table work-dir  # the table of finished runs
#
# New corpus entries go to <work-dir>/corp/<target> (the committed seeds in
# fuzz/corpus/ are read, not written); crashes and timeouts to
# <work-dir>/crashes/<target>/. A crash becomes a seed in fuzz/corpus/ and
# a regression test (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$PWD
BIN="$FUZZ_DIR/target/x86_64-unknown-linux-gnu/release"
RUNS=${FUZZ_RUNS:-10000000}
SECONDS_MAX=${FUZZ_SECONDS:-3600}

table() {
  local work=$1
  echo "| target | executions | seconds | exec/s | edges covered / instrumented | features | corpus | peak RSS MB | result |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for log in "$work"/run-*.log; do
    local t
    t=$(basename "$log" .log); t=${t#run-}
    awk -v t="$t" '
      /Loaded 1 modules/ { total = $5; gsub(/[(]/, "", total) }
      /^#[0-9]+/ && / cov: / {
        for (i = 1; i <= NF; i++) {
          if ($i == "cov:") cov = $(i + 1)
          if ($i == "ft:") ft = $(i + 1)
          if ($i == "corp:") corp = $(i + 1)
          if ($i == "exec/s:") seen_rate = $(i + 1)
        }
        seen = substr($1, 2)
      }
      /^stat::number_of_executed_units:/ { execs = $2 }
      /^stat::average_exec_per_sec:/ { rate = $2 }
      /^stat::peak_rss_mb:/ { rss = $2 }
      /^SUMMARY: libFuzzer: / { result = $3 }
      /^Done [0-9]+ runs in [0-9]+ second/ { secs = $5; if (result == "") result = "0 crashes" }
      END {
        if (execs == "") { execs = seen; rate = seen_rate; result = "running" }
        if (result == "") result = "0 crashes (time limit)"
        if (secs == "" && rate > 0) secs = int(execs / rate)
        pct = total > 0 ? sprintf(" (%.1f %%)", 100 * cov / total) : ""
        printf "| %s | %d | %s | %d | %s / %s%s | %s | %s | %s | %s |\n", t, execs, secs, rate, cov, total, pct, ft, corp, rss, result
      }' "$log"
  done
}

if [[ ${1:-} == --table ]]; then
  table "$2"
  exit 0
fi

WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
cargo +nightly fuzz build
lane() {
  for t in "$@"; do
    mkdir -p "$WORK/corp/$t" "$WORK/crashes/$t"
    nice -n 19 "$BIN/$t" "$WORK/corp/$t" "$FUZZ_DIR/corpus/$t" -runs="$RUNS" \
      -max_total_time="$SECONDS_MAX" -rss_limit_mb=4096 -timeout=25 -print_final_stats=1 \
      -artifact_prefix="$WORK/crashes/$t/" > "$WORK/run-$t.log" 2>&1 || true
  done
}
lane where_clause encode segment &
lane request pgoutput replication serving &
wait
table "$WORK"
