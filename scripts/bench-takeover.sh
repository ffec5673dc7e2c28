#!/usr/bin/env bash
# Takeover time of the replicated deployment with N signatures stored (R3): scripts/cluster-up.sh 2,
# N signatures as NDJSON batches (wrk, viral 0.9 over 100 petitions) into the owner, the standby
# caught up, then kill -9 of the owner; the time until the standby answers /readyz 200 as owner
# (lease TTL, catch-up, and the engine opening on its store with the index the standby kept).
#
#   scripts/bench-takeover.sh [N]     (default 20000000)
set -euo pipefail
n=${1:-20000000}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/http-common.sh"
server=${INGEST_SERVER:-$here/target/release/ingest-server}
cluster_up "$server"
fill "$owner" "$n"
until [ "$(position "$standby")" = "$(position "$owner")" ]; do sleep 0.5; done
echo "standby caught up at position $(position "$standby")"
pid=$(awk -v p="node-$((owner - 8080))" '$2 == p {print $1}' "$CLUSTER_DIR/pids")
kill -9 "$pid"
killed=$(date +%s.%N)
until curl -sf "http://127.0.0.1:$standby/readyz" 2>/dev/null | grep -q '"role":"owner"'; do sleep 0.05; done
ready=$(date +%s.%N)
echo "takeover after kill -9 of the owner: $(echo "$ready - $killed" | bc) s (lease TTL 3 s)"
grep -h "lease taken\|epoch marked\|ready after" "$CLUSTER_DIR/node-$((standby - 8080)).log" | tail -3
