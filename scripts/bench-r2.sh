#!/usr/bin/env bash
# R2: the acknowledgement latency of replicated ingest at half the replicated load, against bare
# JetStream publishes of the same entries, alternating in one run. Each pair:
#   engine: loadtest -R RATE (NDJSON batches of 100, viral 0.9 over 100 petitions, 32
#           connections) into the owner of scripts/cluster-up.sh 2; its acknowledgement
#           percentiles, from the intended send time;
#   floor:  the examples/jetstream_floor tool republishes the log entries the owner appended in
#           that run, same payloads, one at a time at the owner's pacing, to a stream of its own
#           on the same three NATS servers; its publish-to-acknowledgement percentiles.
#
#   scripts/bench-r2.sh [PAIRS] [DURATION] [RATE]     (default 5 pairs of 20s at 85000/s)
set -euo pipefail
pairs=${1:-5}
duration=${2:-20s}
rate=${3:-85000}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/http-common.sh"
server=${INGEST_SERVER:-$here/target/release/ingest-server}
loadtest=${LOADTEST:-$here/target/release/loadtest}
floor=${JETSTREAM_FLOOR:-$here/target/release/examples/jetstream_floor}
cluster_up "$server"
echo "== $pairs pairs: loadtest -R $rate --batch 100 -c 32 -z $duration into the owner ($owner), then the floor"
for pair in $(seq 1 "$pairs"); do
  first=$(( $(position "$owner") + 1 ))
  "$loadtest" run --target "http://127.0.0.1:$owner" --api-key "$key" --seed "$pair" \
    -R "$rate" --batch 100 -c 32 -z "$duration" --petitions 100 --shape viral --hot-share 0.9 \
    >"$work/engine-$pair.txt"
  last=$(position "$owner")
  awk -v p="$pair" '/^corrected/ {gsub(/ms/, ""); printf "pair %s engine: %s requests; acknowledgement p50 %s ms, p99 %s ms, p99.9 %s ms, max %s ms\n", p, $8, $2, $4, $5, $6}' \
    "$work/engine-$pair.txt"
  printf 'pair %s ' "$pair"
  "$floor" --stream ingest_log --first "$first" --last "$last"
done
