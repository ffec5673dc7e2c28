#!/usr/bin/env bash
# Snapshots of the replicated deployment with N signatures stored: scripts/cluster-up.sh 2 with
# the default --snapshot-bytes (1 GiB), N signatures as NDJSON batches (wrk, viral 0.9 over 100
# petitions) into the owner; then the owner's snapshots (from its log), the stream's size
# (NATS /jsz), and a third node started with an empty data directory: the time until its store
# reaches the owner's position (restoring the latest snapshot, then following the stream).
#
#   scripts/bench-snapshot.sh [N]     (default 20000000)
set -euo pipefail
n=${1:-20000000}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/http-common.sh"
server=${INGEST_SERVER:-$here/target/release/ingest-server}
cluster_up "$server"
stream() { # the log stream's state, from NATS server 1
  curl -s "http://127.0.0.1:8222/jsz?streams=true" | python3 -c '
import json, sys
for account in json.load(sys.stdin).get("account_details", []):
    for s in account.get("stream_detail", []):
        if s["name"] == "ingest_log":
            st = s["state"]
            print("%d bytes, entries %d..%d" % (st["bytes"], st["first_seq"], st["last_seq"]))'
}
progress() { echo "stored $(stored "$owner"); stream: $(stream)"; }
fill "$owner" "$n" progress
sleep 5
echo "stream after the load: $(stream)"
grep -h "snapshot taken" "$CLUSTER_DIR/node-$((owner - 8080)).log" | sed 's/^/  /'
du -sh "$CLUSTER_DIR"/nats-1 "$CLUSTER_DIR/node-$((owner - 8080))" | sed 's/^/  /'
# A new node, empty: it restores the latest snapshot and follows the rest.
"$server" --nats nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 --node node-3 \
  --listen 127.0.0.1:8083 --data-dir "$CLUSTER_DIR/node-3" >"$CLUSTER_DIR/node-3.log" 2>&1 &
echo "$! node-3" >>"$CLUSTER_DIR/pids"
started=$(date +%s.%N)
target=$(position "$owner")
until [ "$(position 8083)" = "$target" ]; do sleep 0.2; done
echo "new node at the owner's position $target after $(echo "$(date +%s.%N) - $started" | bc) s"
grep -h "restor" "$CLUSTER_DIR/node-3.log" | sed 's/^/  /'
