#!/usr/bin/env bash
# Events benchmark (BENCHMARKS.md, "Events"): acknowledgement-to-event latency with stream readers
# and a webhook under 100 k signatures/s of HTTP batches, then ingestion throughput with and
# without the readers connected, alternating.
#
#   scripts/bench-events.sh [ROUNDS] [READERS] [STEP]   (defaults: 3 rounds, 1000 readers,
#                                                         thresholds every 1000 signatures)
#   PARTS=latency (or throughput) runs one part only.
#
# Each round of the latency part: loadtest -R 100000 --batch 1000 -c 8 -z 30s over 100
# petitions, each registered with the thresholds STEP, 2*STEP, ..., 32*STEP, READERS event
# streams and a webhook receiver (all in loadtest, on 127.0.0.1). Each round of the throughput
# part: the closed loop (-c 8 --batch 1000 -z 20s) without readers, then with READERS readers.
# New petitions every run (loadtest's seed names them), so thresholds keep being crossed. Each
# throughput run also reports the CPU the server and loadtest used (from /proc and
# /usr/bin/time): the readers are loadtest's too, on the same cores, so the ratio counts their
# parsing as well as the server's writing.
#
# Needs a release build: cargo build --release -p ingest-server -p loadtest. Everything
# listens on 127.0.0.1; data goes to a temp dir removed at the end.
set -euo pipefail
rounds=${1:-3}
readers=${2:-1000}
step=${3:-1000}
target=${CARGO_TARGET_DIR:-target}/release
# shellcheck source=scripts/http-common.sh
. "$(dirname "$0")/http-common.sh"
port=18090
url=http://127.0.0.1:$port

"$target/ingest-server" --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --api-key "admin:$key" --webhook-allow-networks 127.0.0.0/8 --sse-readers-max 20000 \
  >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
wait_http "$url/readyz"

server_cpu() { # the server's user + system CPU so far, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$server_pid/stat"
}

load() { # name, then loadtest flags; writes NAME.json, NAME.txt and NAME.cpu
  local name=$1
  shift
  local before
  before=$(server_cpu)
  /usr/bin/time -f "%U %S" -o "$work/$name.time" \
    "$target/loadtest" run --target "$url" --api-key "$key" --batch 1000 -c 8 --petitions 100 \
    --threshold-step "$step" --json "$work/$name.json" "$@" >"$work/$name.txt" 2>&1 || {
    cat "$work/$name.txt" >&2
    exit 1
  }
  awk -v b="$before" -v a="$(server_cpu)" '{printf "%.2f %.2f\n", a - b, $1 + $2}' \
    "$work/$name.time" >"$work/$name.cpu"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%FT%TZ)"
parts=${PARTS:-latency,throughput}
echo "== latency: -R 100000, $readers readers, a webhook, thresholds every $step"
for round in $(seq 1 "$rounds"); do
  [[ $parts == *latency* ]] || break
  load "latency-$round" -R 100000 -z 30s --sse-readers "$readers" --webhook
  python3 - "$work/latency-$round.json" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["events"]
s, w = e["sse"], e["webhook"]
print(f"round {sys.argv[2]}: {r['rate']['achieved_per_s']:.0f} signatures/s, "
      f"{e['crossings_acknowledged']} crossings ({e['crossings_acknowledged'] / r['elapsed_s']:.0f}/s); "
      f"every reader p50 {s['latency_ms']['p50']:.1f} p99 {s['latency_ms']['p99']:.1f} ms "
      f"(first reader p99 {s['first_reader_latency_ms']['p99']:.1f}); "
      f"webhook p50 {w['latency_ms']['p50']:.1f} p99 {w['latency_ms']['p99']:.1f} ms; "
      f"seen by every reader {s['seen_by_every_reader']}, lagged {s['disconnected_lagged']}, "
      f"webhook delivered {w['delivered']}")
EOF
done

echo "== throughput: closed loop, without readers and with $readers, alternating"
for round in $(seq 1 "$rounds"); do
  [[ $parts == *throughput* ]] || break
  load "plain-$round" -z 20s
  load "readers-$round" -z 20s --sse-readers "$readers"
  python3 - "$work" "$round" <<'EOF'
import json, sys
work, r = sys.argv[1], sys.argv[2]
def run(name):
    report = json.load(open(f"{work}/{name}-{r}.json"))
    server, loadtest = map(float, open(f"{work}/{name}-{r}.cpu").read().split())
    signatures = report["rate"]["achieved_per_s"] * report["elapsed_s"]
    return report["rate"]["achieved_per_s"], server / signatures * 1e6, server, loadtest
a, b = run("plain"), run("readers")
print(f"round {r}: without {a[0]:.0f}/s, with readers {b[0]:.0f}/s, ratio {b[0] / a[0]:.3f}; "
      f"server CPU per signature {a[1]:.2f} / {b[1]:.2f} us; CPU s server {a[2]:.1f} / {b[2]:.1f}, "
      f"loadtest {a[3]:.1f} / {b[3]:.1f}")
EOF
done
python3 - "$work" "$rounds" "$parts" <<'EOF'
import json, statistics, sys
work, rounds, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = range(1, rounds + 1)
if "latency" in parts:
    lat = [json.load(open(f"{work}/latency-{i}.json"))["events"] for i in runs]
    sse = [e["sse"]["latency_ms"]["p99"] for e in lat]
    hook = [e["webhook"]["latency_ms"]["p99"] for e in lat]
    print(f"medians: every reader p99 {statistics.median(sse):.1f} ms, webhook p99 "
          f"{statistics.median(hook):.1f} ms")
if "throughput" in parts:
    rate = lambda n: json.load(open(f"{work}/{n}.json"))["rate"]["achieved_per_s"]
    ratios = [rate(f"readers-{i}") / rate(f"plain-{i}") for i in runs]
    print(f"median throughput with readers / without {statistics.median(ratios):.3f}")
EOF
