#!/usr/bin/env bash
# A/B of ingest-server builds over HTTP: one bare hyper hello-world and each given server binary
# (buffered, --threads 2, one petition "bench"), then ROUNDS rounds of `wrk -t2 -c64` against
# the hello-world and each server in turn. Prints requests/s, the server's CPU time per request
# (from /proc/PID/stat, in µs) and the ratio to the hello-world of the same round.
#
#   scripts/ab-http.sh ROUNDS DURATION sign|read SERVER_BINARY...
#
# Needs a release build (for examples/hello) and wrk. Ports 18081 and 18090 upwards.
set -euo pipefail
rounds=$1 duration=$2 mode=$3
shift 3
# shellcheck source=scripts/http-common.sh
. "$(dirname "$0")/http-common.sh"
target=${CARGO_TARGET_DIR:-$here/target}/release

"$target/examples/hello" 127.0.0.1:18081 2 >/dev/null 2>&1 &
pids+=($!)
hello_pid=$!
ports=() server_pids=()
port=18090
for binary in "$@"; do
  "$binary" --listen "127.0.0.1:$port" --data-dir "$work/data-$port" --durability buffered \
    --api-key "admin:$key" --threads 2 >"$work/server-$port.log" 2>&1 &
  pids+=($!)
  server_pids+=($!)
  ports+=("$port")
  port=$((port + 1))
done
wait_http "http://127.0.0.1:18081/"
for p in "${ports[@]}"; do
  wait_http "http://127.0.0.1:$p/readyz"
  register "$p" bench
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One wrk round against PORT, charging CPU to PID: prints "requests/s µs-per-request".
round() {
  local url script=()
  if [ "$mode" = sign ]; then
    url=http://127.0.0.1:$1
    script=(-s "$here/benches/wrk/sign.lua")
  elif [ "$1" = 18081 ]; then
    url=http://127.0.0.1:18081/
  else
    url=http://127.0.0.1:$1/v1/petitions/bench
  fi
  local before after out
  before=$(cpu_ticks "$2")
  out=$(API_KEY=$key wrk -t2 -c64 -d"$duration" "${script[@]}" "$url")
  after=$(cpu_ticks "$2")
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /^Requests\/sec:/ { rate = $2 }
    /requests in/ { n = $1 }
    END { printf "%.0f %.1f\n", rate, ticks * 1e6 / hz / n }' <<<"$out"
}

for r in $(seq 1 "$rounds"); do
  read -r hello_rate hello_cpu < <(round 18081 "$hello_pid")
  line="round $r: hello $hello_rate req/s ($hello_cpu µs)"
  for i in "${!ports[@]}"; do
    read -r rate cpu < <(round "${ports[$i]}" "${server_pids[$i]}")
    ratio=$(awk -v a="$rate" -v b="$hello_rate" 'BEGIN {printf "%.3f", a / b}')
    line="$line | $(basename "${@:$((i + 1)):1}") $rate req/s ($cpu µs) ratio $ratio"
  done
  echo "$line"
done
