#!/usr/bin/env bash
# Compares two engine-bench builds on P1 (in memory) and P2 (durable, sync), round by round.
#
#   scripts/ab-engine.sh A_BIN B_BIN [ROUNDS] [SIGNATURES]     (defaults: 3 rounds, 20000000)
#   AB_TARGETS=p1 scripts/ab-engine.sh ...                      (P1 only; default "p1 p2")
#   AB_B_ARGS="--countries GB:0.9:650,US:0.1" scripts/ab-engine.sh ...
#                           (extra arguments for B's runs only, split at spaces; AB_A_ARGS: A's)
#
# Each round runs both builds, in the order A B, then B A in the next round, and so on, so that a
# drift of the machine's speed over the run weighs on both alike. P2 runs start from an empty
# data dir under $BENCH_DATA (default /var/tmp/petition-ab) after `sync` and 4 s of rest. Prints
# each run's signatures/s, then each build's median and B's median over A's, then each round's
# B/A and their median.
set -euo pipefail
a=$1
b=$2
rounds=${3:-3}
n=${4:-20000000}
data=${BENCH_DATA:-/var/tmp/petition-ab}
read -r -a a_args <<<"${AB_A_ARGS:-}"
read -r -a b_args <<<"${AB_B_ARGS:-}"
work=$(mktemp -d)
trap 'rm -rf "$work" "$data"' EXIT

median() { # numbers on stdin
  sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
rate() { # json report
  grep -o '"signatures_per_sec": *[0-9.]*' "$1" | grep -o '[0-9.]*$'
}
p1() { # bin json [extra args]
  "$1" memory --threads 2 --signatures "$n" --petitions 10000 --shape viral --hot-share 0.9 \
    --json "$2" "${@:3}" >/dev/null
}
p2() { # bin json [extra args]
  rm -rf "$data"
  sync
  sleep 4
  "$1" durable --signatures "$n" --petitions 100000 --shape viral --hot-share 0.9 --dup-ratio 0.05 \
    --durability sync --data-dir "$data" --threads 8 --batch 2048 --progress-s 0 --no-disk-probe \
    --json "$2" "${@:3}" >/dev/null
}

echo "# ab-engine: A=$a B=$b, $rounds rounds of $n signatures, $(nproc) cores, $(date -u +%FT%TZ)"
[ ${#a_args[@]} -eq 0 ] || echo "# A's extra arguments: ${a_args[*]}"
[ ${#b_args[@]} -eq 0 ] || echo "# B's extra arguments: ${b_args[*]}"
for target in ${AB_TARGETS:-p1 p2}; do
  for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for build in $order; do
      if [ "$build" = A ]; then
        "$target" "$a" "$work/$target-$build-$round.json" "${a_args[@]}"
      else
        "$target" "$b" "$work/$target-$build-$round.json" "${b_args[@]}"
      fi
      printf '%s round %d %s: %.0f signatures/s\n' "$target" "$round" "$build" \
        "$(rate "$work/$target-$build-$round.json")"
    done
  done
  med_a=$(for r in $(seq 1 "$rounds"); do rate "$work/$target-A-$r.json"; done | median)
  med_b=$(for r in $(seq 1 "$rounds"); do rate "$work/$target-B-$r.json"; done | median)
  printf '%s medians: A %.0f, B %.0f signatures/s; B/A %.3f\n' "$target" "$med_a" "$med_b" \
    "$(awk -v a="$med_a" -v b="$med_b" 'BEGIN {print b / a}')"
  # Each round's B/A, and their median: a drift of the machine's speed within a round weighs
  # on both builds, so these scatter less than the runs themselves.
  ratios=$(for r in $(seq 1 "$rounds"); do
    awk -v a="$(rate "$work/$target-A-$r.json")" -v b="$(rate "$work/$target-B-$r.json")" \
      'BEGIN {printf "%.3f\n", b / a}'
  done)
  printf '%s rounds B/A: %s; median %.3f\n' "$target" "$(echo "$ratios" | paste -sd ' ')" \
    "$(echo "$ratios" | median)"
done
