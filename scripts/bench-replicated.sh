#!/usr/bin/env bash
# Replicated durable ingest against a single node, alternating in one run: NDJSON batches of
# 1,000 lines (viral 0.9 over 100 petitions, wrk -t2 -c8, as P4) sent to
#   single: one ingest-server, durability sync, no NATS;
#   R3:     the owner of scripts/cluster-up.sh 2 (3 NATS servers with sync_interval: always,
#           the owner and one standby), all on this machine.
# Signatures/s are counted by each server's ingest_stored_signatures. Each run starts on a quiet
# machine: the other deployment's flushes and compactions from its last run have finished (at most
# 120 s are waited; the wait is printed).
#
#   scripts/bench-replicated.sh [ROUNDS] [DURATION]     (default 3 rounds of 20s)
#   CONNECTIONS=32 scripts/bench-replicated.sh ...      (wrk's connections; default 8, as P4)
#
# A replicated acknowledgement waits for a quorum's fsync as well as the local write, so with
# few connections (8 of 1,000 lines: 8,000 signatures in flight) R3 is bound by latency, not by
# the machine; more connections show what it can take.
set -euo pipefail
connections=${CONNECTIONS:-8}
rounds=${1:-3}
duration=${2:-20s}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/http-common.sh"
server=${INGEST_SERVER:-$here/target/release/ingest-server}
cluster_up "$server"
"$server" --listen 127.0.0.1:18091 --data-dir "$work/single" --durability sync >"$work/single.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18091/readyz
ids=$(seq -f 'bench-%g' 0 99)
register 18091 $ids
register "$owner" $ids

run() { # label port round
  local before after start end waited
  waited=$(settle)
  before=$(stored "$2")
  start=$(date +%s.%N)
  API_KEY=$key PETITION=bench LINES=1000 PETITIONS=100 wrk -t2 -c"$connections" -d"$duration" \
    -s "$here/benches/wrk/batch.lua" "http://127.0.0.1:$2" >"$work/$1-$3.txt"
  end=$(date +%s.%N)
  after=$(stored "$2")
  awk -v l="$1" -v r="$3" -v a="$after" -v b="$before" -v s="$start" -v e="$end" -v w="$waited" \
    'BEGIN { printf "round %s %-6s %9.0f signatures/s (%d stored; after %d s of settling)\n", r, l, (a - b) / (e - s), a - b, w }'
}
echo "== NDJSON batches of 1000, viral 0.9 over 100 petitions, wrk -t2 -c$connections -d$duration; owner on $owner"
for round in $(seq 1 "$rounds"); do
  run single 18091 "$round"
  run R3 "$owner" "$round"
done
echo "== the owner's log appends (ingest_store_write_latency_seconds covers append + local write)"
curl -s "http://127.0.0.1:$owner/metrics" | grep -E '^ingest_store_write_latency_seconds_(sum|count) |^ingest_store_batches_total |^ingest_cluster_log_position ' | sed 's/^/  /'
