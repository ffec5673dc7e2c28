#!/usr/bin/env bash
# P6 at full scale: a durable ingest (P2's load over 500,000 petitions) killed with kill -9 once
# its progress line passes KILL_AT submitted signatures, then `engine-bench recover` on the store.
#
#   scripts/bench-kill.sh SIGNATURES KILL_AT DATA_DIR [extra durable flags...]
#   scripts/bench-kill.sh 400000000 380000000 /var/tmp/bench400
#
# With KILL_NEAR_SAVE_END=1 the kill waits, once KILL_AT is passed, for an index save to be 97%
# written (index.tmp against the last saved index): the worst moment, when the most signatures
# lie after the last whole save. With RECOVER=0 the store is left as the kill left it (to recover
# it with several builds, from copies of the saved index).
#
# Prints the durable run's progress (with the index saves), whether an index save was under way
# at the kill (the file index.tmp), then recover's line. ENGINE_BENCH names the binary (default:
# target/release/engine-bench, or $CARGO_TARGET_DIR/release/engine-bench). Needs about 45 bytes a
# signature of disk for the store and 32 for the saved index and the one being written.
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,17p' "$0" >&2
    exit 2
fi
n=$1
kill_at=$2
data=$3
shift 3
bench=${ENGINE_BENCH:-${CARGO_TARGET_DIR:-target}/release/engine-bench}
[ -x "$bench" ] || { echo "no engine-bench at $bench (cargo build --release -p benches)" >&2; exit 2; }
if [ -e "$data" ] && [ -n "$(ls -A "$data")" ]; then
    echo "$data is not empty" >&2
    exit 2
fi

# True unless KILL_NEAR_SAVE_END=1 and no index save is at least 97% written.
save_nearly_written() {
    [ "${KILL_NEAR_SAVE_END:-0}" = 1 ] || return 0
    local saved writing
    saved=$(stat -c %s "$data/index" 2>/dev/null || echo 0)
    writing=$(stat -c %s "$data/index.tmp" 2>/dev/null || echo 0)
    [ "$saved" -gt 0 ] && [ "$writing" -ge $((saved / 100 * 97)) ]
}

progress=$(mktemp)
trap 'rm -f "$progress"' EXIT
"$bench" durable --signatures "$n" --petitions 500000 --shape viral --hot-share 0.9 --dup-ratio 0.05 \
    --durability sync --threads 8 --batch 2048 --data-dir "$data" --no-disk-probe --progress-s 5 "$@" \
    2> >(tee "$progress" >&2) &
victim=$!
while kill -0 "$victim" 2>/dev/null; do
    done_now=$(grep -o '^  [0-9]* /' "$progress" | tail -n 1 | tr -dc '0-9' || true)
    if [ -n "$done_now" ] && [ "$done_now" -ge "$kill_at" ] && save_nearly_written; then
        kill -9 "$victim"
        echo "killed at progress $done_now"
        if [ -e "$data/index.tmp" ]; then
            echo "an index save was under way ($(stat -c %s "$data/index.tmp") bytes written)"
        fi
        break
    fi
    sleep 0.5
done
wait "$victim" 2>/dev/null || true
ls -l "$data/index" 2>/dev/null || echo "no saved index"
[ "${RECOVER:-1}" = 0 ] || "$bench" recover --data-dir "$data"
