#!/usr/bin/env bash
# P7: the engine's `sync` ack latency at half load, against the machine's floor, run alternately.
#
#   scripts/p7.sh [PAIRS] [SECONDS] [RATE] [LONG_SECONDS]
#       (defaults: 5 pairs of 20 s; RATE measured; LONG_SECONDS 300, 0 to skip)
#
#   1. capacity: engine-bench durable, closed loop, the P7 call shape (8 threads, calls of 64,
#      sync), unless RATE is given; half of it is the load from then on;
#   2. PAIRS × (engine-bench floor and engine-bench durable --rate, floor first in odd pairs,
#      engine first in even ones), each SECONDS long, with `sync` and 4 s of rest before each
#      run; prints each pair's p99s and their ratio, then the medians (target: engine p99 ≤ 2×
#      the floor's p99);
#   3. one engine run of LONG_SECONDS at the same rate: its p99.9 (target ≤ 25 ms) and its
#      stalls beside what RocksDB was doing then.
#
# Data dirs live under $BENCH_DATA (default /var/tmp/petition-p7) and are removed; JSON reports go
# to $OUT (default ./bench-results). Needs a release build:
# cargo build --release --workspace --all-targets
set -euo pipefail
pairs=${1:-5}
seconds=${2:-20}
rate=${3:-}
long=${4:-300}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${ENGINE_BENCH:-${CARGO_TARGET_DIR:-$here/target}/release/engine-bench}
data=${BENCH_DATA:-/var/tmp/petition-p7}
out=${OUT:-bench-results}
mkdir -p "$out"
rm -rf "$data"
mkdir -p "$data"
trap 'rm -rf "$data"' EXIT

field() { # file name: a number from a JSON report
  grep -o "\"$2\": *[0-9.]*" "$1" | head -1 | grep -o '[0-9.]*$'
}
median() { # numbers on stdin
  sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
rest() {
  sync
  sleep 4
}

echo "# p7: $pairs pairs of $seconds s, commit $(git -C "$here" rev-parse --short HEAD), $(date -u +%FT%TZ)"
# The disk, probed once here rather than by every run (the probe writes 256 MiB just before it).
"$bench" floor --data-dir "$data/probe" --signatures 6400 --threads 1 --batch 64 --rate 64000 |
  grep '^disk:'
rm -rf "$data/probe"
if [ -z "$rate" ]; then
  rest
  "$bench" durable --signatures 6000000 --petitions 10000 --shape viral --hot-share 0.9 \
    --durability sync --data-dir "$data/capacity" --threads 8 --batch 64 --no-disk-probe \
    --progress-s 0 --json "$out/p7-capacity.json"
  rm -rf "$data/capacity"
  rate=$(awk -v r="$(field "$out/p7-capacity.json" signatures_per_sec)" 'BEGIN {printf "%d", r / 2}')
fi
signatures=$((rate * seconds))
echo "# half load: $rate signatures/s in calls of 64 from 8 threads"

floor() { # pair
  rest
  "$bench" floor --data-dir "$data/floor" --signatures "$signatures" --threads 8 --batch 64 \
    --rate "$rate" --no-disk-probe --json "$out/p7-floor-$1.json"
  rm -rf "$data/floor"
}
engine() { # pair
  rest
  "$bench" durable --signatures "$signatures" --petitions 10000 --shape viral --hot-share 0.9 \
    --durability sync --data-dir "$data/engine" --threads 8 --batch 64 --rate "$rate" \
    --no-disk-probe --progress-s 0 --json "$out/p7-engine-$1.json"
  rm -rf "$data/engine"
}

ratios=()
for i in $(seq 1 "$pairs"); do
  if [ $((i % 2)) -eq 1 ]; then
    floor "$i"
    engine "$i"
  else
    engine "$i"
    floor "$i"
  fi
  floor_p99=$(field "$out/p7-floor-$i.json" ack_latency_us_p99)
  engine_p99=$(field "$out/p7-engine-$i.json" ack_latency_us_p99)
  ratio=$(awk -v e="$engine_p99" -v f="$floor_p99" 'BEGIN {printf "%.2f", e / f}')
  ratios+=("$ratio")
  echo "## pair $i: floor p99 $floor_p99 µs, engine p99 $engine_p99 µs, ratio $ratio"
done
floor_median=$(for i in $(seq 1 "$pairs"); do field "$out/p7-floor-$i.json" ack_latency_us_p99; done | median)
engine_median=$(for i in $(seq 1 "$pairs"); do field "$out/p7-engine-$i.json" ack_latency_us_p99; done | median)
ratio_median=$(printf '%s\n' "${ratios[@]}" | median)
echo "## medians over $pairs pairs: floor p99 $floor_median µs, engine p99 $engine_median µs, ratio of each pair: median $ratio_median (target ≤ 2)"

if [ "$long" -gt 0 ]; then
  rest
  echo "## long run: $long s at $rate signatures/s"
  "$bench" durable --signatures $((rate * long)) --petitions 10000 --shape viral --hot-share 0.9 \
    --durability sync --data-dir "$data/long" --threads 8 --batch 64 --rate "$rate" \
    --no-disk-probe --progress-s 60 --json "$out/p7-long.json"
  rm -rf "$data/long"
  echo "## long run: p99.9 $(field "$out/p7-long.json" ack_latency_us_p999) µs (target ≤ 25,000 µs)"
fi
