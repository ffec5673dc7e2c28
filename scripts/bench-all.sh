#!/usr/bin/env bash
# Re-runs every performance target listed in BENCHMARKS.md at a chosen scale and keeps the JSON reports.
#
#   scripts/bench-all.sh [SIGNATURES] [OUT_DIR]      (defaults: 20000000, ./bench-results)
#
#   P1, P5  engine-bench memory, 2 threads, viral 0.9                 → OUT/p1-p5.json
#   P8      engine-bench memory --compare-rounds 3 (uniform vs viral)  → OUT/p8.json
#   P2      engine-bench durable, sync, viral 0.9 over 100,000 petitions, 5% re-sends
#                                                                      → OUT/p2.json
#   P6      kill -9 of a second P2 run at ~90% of its time, then recover → OUT/p6.json
#   P7      scripts/p7.sh: the closed-loop capacity for calls of 64 (8 threads, sync), then
#           3 pairs of the floor and the engine at half that rate, alternately, then a
#           P7_LONG_S-second engine run (default 300; 0 skips it)     → OUT/p7-*.json
#   P3, P4  scripts/bench-http.sh (wrk vs the bare hyper hello-world)  → OUT/http.txt
#   E1–E3   scripts/bench-events.sh 3 1000 1000 (event latency, throughput with readers) → OUT/events.txt
#   L1      engine-bench lifecycle: SIGNATURES/2 pending, then their validations (at most 10 M)
#                                                                      → OUT/l1.json
#   L2, L3  engine-bench invalidate: preview and job on a petition holding 1 in 20 of
#           SIGNATURES, under 400 k/s of ingestion                     → OUT/l2-l3.json
#   L4      is an A/B of two builds: scripts/ab-engine.sh OLD NEW 3 20000000 with AB_TARGETS=p2
#   G1      P8 with countries: uniform over 50 countries vs a viral petition with a UK-like mix
#                                                                      → OUT/g1.json
#   G3      memory with a UK-like mix over 500,000 petitions, viral and uniform
#                                                                      → OUT/g3-*.json
#   G2      is an A/B of two builds: scripts/ab-engine.sh OLD NEW 3 20000000 with
#           AB_B_ARGS="--countries $MIX"; G4 is in scripts/bench-http.sh
#
# Data dirs live under $BENCH_DATA (default /var/tmp/petition-bench) and are removed first.
# Needs a release build (cargo build --release --workspace --all-targets) and wrk for HTTP.
set -euo pipefail
n=${1:-20000000}
out=${2:-bench-results}
target=${CARGO_TARGET_DIR:-target}/release
bench=$target/engine-bench
data=${BENCH_DATA:-/var/tmp/petition-bench}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
rm -rf "$data"
mkdir -p "$data"

echo "# bench-all: $n signatures, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), commit $(git -C "$here" rev-parse --short HEAD), $(date -u +%FT%TZ)"

echo; echo "## P1, P5: memory, 2 threads, viral 0.9"
"$bench" memory --threads 2 --signatures "$n" --petitions 10000 --shape viral --hot-share 0.9 \
  --json "$out/p1-p5.json"

echo; echo "## P8: uniform vs viral, 3 alternating rounds"
small=$(( n < 20000000 ? n : 20000000 ))
"$bench" memory --compare-rounds 3 --signatures "$small" --petitions 10000 --hot-share 0.9 \
  --json "$out/p8.json"

mix=GB:0.9:650,US:0.04:50,FR:0.02,DE:0.02,IE:0.01
echo; echo "## G1: P8 with countries (uniform: 50 countries; viral: the hot petition $mix)"
"$bench" memory --compare-rounds 3 --signatures "$small" --petitions 10000 --hot-share 0.9 \
  --countries uniform:50 --hot-countries "$mix" --json "$out/g1.json"

echo; echo "## G3: memory with $mix over 500,000 petitions"
for shape in viral uniform; do
  "$bench" memory --threads 2 --signatures "$n" --petitions 500000 --shape "$shape" --hot-share 0.9 \
    --countries "$mix" --json "$out/g3-$shape.json"
done

echo; echo "## P2: durable, sync, viral 0.9 over 100,000 petitions, 5% re-sends"
"$bench" durable --signatures "$n" --petitions 100000 --shape viral --hot-share 0.9 --dup-ratio 0.05 \
  --durability sync --data-dir "$data/p2" --threads 8 --batch 2048 --progress-s 10 --json "$out/p2.json"

echo; echo "## P6: kill -9 of the same run at ~90% of its expected time, then recover"
rate=$(grep -o '"signatures_per_sec": *[0-9.]*' "$out/p2.json" | grep -o '[0-9.]*$')
kill_after=$(awk -v n="$n" -v r="$rate" 'BEGIN {printf "%d", 0.9 * n / r}')
"$bench" durable --signatures "$n" --petitions 100000 --shape viral --hot-share 0.9 --dup-ratio 0.05 \
  --durability sync --data-dir "$data/p6" --threads 8 --batch 2048 --no-disk-probe --progress-s 10 &
victim=$!
sleep "$kill_after"
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
"$bench" recover --data-dir "$data/p6" --json "$out/p6.json"
rm -rf "$data/p6"

echo; echo "## L1: pending signatures, then their validations (shuffled), sync"
half=$(( n / 2 < 10000000 ? n / 2 : 10000000 ))
"$bench" lifecycle --signatures "$half" --data-dir "$data/l1" --json "$out/l1.json"
rm -rf "$data/l1"

echo; echo "## L2, L3: invalidation of one petition: preview, then the job under 400 k/s of ingestion"
"$bench" invalidate --signatures "$n" --rate 400000 --data-dir "$data/l2" --json "$out/l2-l3.json"
rm -rf "$data/l2"

echo; echo "## P7: the floor and the engine alternately at half load, then a long run"
OUT="$out" BENCH_DATA="$data/p7" ENGINE_BENCH="$bench" \
  "$here/scripts/p7.sh" 3 20 "" "${P7_LONG_S:-300}"

rm -rf "$data"
if command -v wrk >/dev/null; then
  echo; echo "## P3, P4, petition reads (HTTP)"
  "$here/scripts/bench-http.sh" 3 10s | tee "$out/http.txt"
else
  echo; echo "wrk not installed: HTTP benchmarks skipped (apt-get install wrk)"
fi
echo; echo "## E1–E3: events to 1,000 stream readers and a webhook, throughput with and without them"
"$here/scripts/bench-events.sh" 3 1000 1000 | tee "$out/events.txt"
