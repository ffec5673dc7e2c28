#!/usr/bin/env bash
# HTTP benchmarks (P3, P4, petition, countries and history reads) with wrk, against
# ingest-server and the bare hyper hello-world, alternating in one run so the ratios are fair on
# a noisy machine.
#
#   scripts/bench-http.sh [ROUNDS] [DURATION]     (defaults: 3 rounds, 10s each)
#
# Needs: wrk (apt-get install wrk) and a release build:
#   cargo build --release --workspace --all-targets
# Everything listens on 127.0.0.1 only. Data goes to a temp dir that is removed at the end.
set -euo pipefail
rounds=${1:-3}
duration=${2:-10s}
target=${CARGO_TARGET_DIR:-target}/release
server=$target/ingest-server
hello=$target/examples/hello
# shellcheck source=scripts/http-common.sh
. "$(dirname "$0")/http-common.sh"

start_server() { # durability port
  "$server" --listen "127.0.0.1:$2" --data-dir "$work/data-$1-$2" --durability "$1" \
    --api-key "admin:$key" --threads 2 >"$work/server-$1-$2.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$2/readyz"
}

rate() { # wrk output → requests/s
  awk '/^Requests\/sec:/ {print $2}'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%FT%TZ)"
"$hello" 127.0.0.1:18081 2 >"$work/hello.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:18081/"
start_server buffered 18082
register 18082 bench
start_server sync 18083
register 18083 $(seq -f 'bench-%g' 0 99)

echo
echo "== P3: single-signature POST, 64 keep-alive connections, wrk -t2 -c64 -d$duration"
for round in $(seq 1 "$rounds"); do
  h=$(wrk -t2 -c64 -d"$duration" -s "$here/benches/wrk/sign.lua" http://127.0.0.1:18081 | rate)
  s=$(API_KEY=$key wrk -t2 -c64 -d"$duration" -s "$here/benches/wrk/sign.lua" http://127.0.0.1:18082 | tee "$work/p3-$round.txt" | rate)
  awk -v r="$round" -v h="$h" -v s="$s" 'BEGIN {printf "round %d: hello %.0f req/s, ingest-server (buffered) %.0f req/s, ratio %.3f\n", r, h, s, s/h}'
  grep '^status' "$work/p3-$round.txt" | sed 's/^/    /'
done
curl -s http://127.0.0.1:18082/v1/petitions/bench | sed 's/^/  petition after P3: /'
echo
# The P3 signers name no country: add some from 10 countries and 200 regions, so the countries
# and history answers have something to show.
load_places 18082 bench 5000
echo "  countries of bench: $(curl -s http://127.0.0.1:18082/v1/petitions/bench/countries | cut -c1-160)..."
echo "  history of bench: $(curl -s 'http://127.0.0.1:18082/v1/petitions/bench/history?resolution=minute' | cut -c1-160)..."
echo

echo "== Reads of bench, wrk -t2 -c64 -d$duration each: the hello-world, then GET"
echo "   /v1/petitions/bench, /v1/petitions/bench/countries, /v1/petitions/bench/history?resolution=minute"
for round in $(seq 1 "$rounds"); do
  h=$(wrk -t2 -c64 -d"$duration" http://127.0.0.1:18081/ | rate)
  p=$(wrk -t2 -c64 -d"$duration" http://127.0.0.1:18082/v1/petitions/bench | rate)
  c=$(wrk -t2 -c64 -d"$duration" http://127.0.0.1:18082/v1/petitions/bench/countries | rate)
  m=$(wrk -t2 -c64 -d"$duration" 'http://127.0.0.1:18082/v1/petitions/bench/history?resolution=minute' | rate)
  awk -v r="$round" -v h="$h" -v p="$p" -v c="$c" -v m="$m" 'BEGIN {
    printf "round %d: hello %.0f req/s; petition %.0f (ratio %.3f), countries %.0f (%.3f), history %.0f (%.3f)\n",
      r, h, p, p/h, c, c/h, m, m/h }'
done
echo

echo "== P4: NDJSON batches of 1000 lines, sync, viral 0.9 over 100 petitions, wrk -t2 -c8 -d$duration"
for round in $(seq 1 "$rounds"); do
  before=$(curl -s http://127.0.0.1:18083/metrics | awk '/^ingest_stored_signatures / {print $2}')
  start=$(date +%s.%N)
  API_KEY=$key PETITION=bench LINES=1000 PETITIONS=100 wrk -t2 -c8 -d"$duration" -s "$here/benches/wrk/batch.lua" http://127.0.0.1:18083 >"$work/p4-$round.txt"
  end=$(date +%s.%N)
  after=$(curl -s http://127.0.0.1:18083/metrics | awk '/^ingest_stored_signatures / {print $2}')
  awk -v r="$round" -v a="$after" -v b="$before" -v s="$start" -v e="$end" \
    'BEGIN {printf "round %d: %.0f durable signatures in %.1f s = %.0f signatures/s (counted by the server)\n", r, a-b, e-s, (a-b)/(e-s)}'
  grep -E '^status|Latency' "$work/p4-$round.txt" | sed 's/^/    /'
done
curl -s http://127.0.0.1:18083/metrics | grep -E '^ingest_store_write_latency_seconds_(sum|count) |^ingest_store_batches_total' | sed 's/^/  /'
