#!/usr/bin/env bash
# Replicated ingest of two ingest-server builds (or one build under two loads), each run on a fresh
# deployment of scripts/cluster-up.sh 2: 5 s of warm-up, then DURATION of wrk NDJSON batches of
# 1,000 lines (viral 0.9 over 100 petitions) into the owner. Signatures/s from the owner's
# ingest_stored_signatures. The pairs alternate: A B, then B A, and so on.
#
#   scripts/ab-replicated.sh A_BIN B_BIN [PAIRS] [DURATION]          (default 4 pairs of 20s)
#   AB_A_CONNECTIONS=8 AB_B_CONNECTIONS=32 scripts/ab-replicated.sh BIN BIN ...
#                                                 (wrk's connections for each side; default 8)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = --one ]; then # --one BIN DURATION CONNECTIONS: one run; prints its signatures/s
  source "$here/scripts/http-common.sh"
  cluster_up "$2"
  register "$owner" $(seq -f 'bench-%g' 0 99)
  load() { # duration connections
    API_KEY=$key PETITION=bench LINES=1000 PETITIONS=100 wrk -t2 -c"$2" -d"$1" \
      -s "$here/benches/wrk/batch.lua" "http://127.0.0.1:$owner" >/dev/null
  }
  load 5s "$4"
  before=$(stored "$owner")
  start=$(date +%s.%N)
  load "$3" "$4"
  end=$(date +%s.%N)
  after=$(stored "$owner")
  awk -v a="$after" -v b="$before" -v s="$start" -v e="$end" \
    'BEGIN { printf "%.0f\n", (a - b) / (e - s) }'
  exit 0
fi

median() { # numbers on stdin (as ab-engine.sh and p7.sh)
  sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

a=$1
b=$2
pairs=${3:-4}
duration=${4:-20s}
echo "# ab-replicated: A=$a (${AB_A_CONNECTIONS:-8} connections)" \
  "B=$b (${AB_B_CONNECTIONS:-8} connections), $pairs pairs of $duration, $(date -u +%FT%TZ)"
ratios=()
for pair in $(seq "$pairs"); do
  order="A B"
  [ $((pair % 2)) -eq 0 ] && order="B A"
  for side in $order; do
    if [ "$side" = A ]; then
      rate_a=$("$0" --one "$a" "$duration" "${AB_A_CONNECTIONS:-8}")
      echo "pair $pair A: $rate_a signatures/s"
    else
      rate_b=$("$0" --one "$b" "$duration" "${AB_B_CONNECTIONS:-8}")
      echo "pair $pair B: $rate_b signatures/s"
    fi
  done
  ratios+=("$(awk -v a="$rate_a" -v b="$rate_b" 'BEGIN { printf "%.3f", b / a }')")
  echo "pair $pair B/A: ${ratios[-1]}"
done
printf "median of the pairs' B/A: %.3f\n" "$(printf '%s\n' "${ratios[@]}" | median)"
